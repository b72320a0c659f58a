"""A run's files under adversity: a run directory already in use, a checkpoint that
is another run's, writes that fail half way, a tampered checkpoint, a second Ctrl-C.
The rule: a clear error naming what is wrong, and nothing lost or half-written."""

from __future__ import annotations

import errno
import json
import os
import signal

import numpy as np
import pytest
from test_cli import assert_one_line_error, cli, short_sine_run
from test_trainer import assert_same_weights, interrupt_on_step, make_stateless, weights

from tinygrad_rnn import checkpoint
from tinygrad_rnn.rundir import RunDirectory, RunDirectoryError
from tinygrad_rnn.train import plots
from tinygrad_rnn.train.trainer import CheckpointWriteError


# ---- run directories ---------------------------------------------------------------
def test_a_new_run_refuses_an_out_that_holds_a_run(tmp_path):
    out = tmp_path / "run"
    short_sine_run(out)
    before = (out / "checkpoint.npz").read_bytes()
    again = cli("train", "addition", "--out", str(out), "--max-steps", "1", "--quiet")
    assert_one_line_error(again, f"--out {out} already holds a run", "--resume")
    assert (out / "checkpoint.npz").read_bytes() == before


def test_an_out_that_is_a_file_or_under_one_is_refused_before_training(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(cli("train", "sine", "--out", str(afile)), "expected a directory")
    under = cli("train", "sine", "--out", str(afile / "run"))
    assert_one_line_error(under, f"--out {afile / 'run'}: cannot make the directory")


def test_default_run_directories_started_in_one_second_are_distinct(tmp_path):
    stamp = tmp_path / "runs" / "sine-20261128-120000"
    first, second = (RunDirectory.claim_new(stamp, given=False) for _ in range(2))
    assert first.path.name == "sine-20261128-120000"
    assert second.path.name == "sine-20261128-120000-2"
    assert first.path.is_dir() and second.path.is_dir()


def test_a_run_directory_in_use_is_refused_to_a_second_trainer(tmp_path):
    holder = RunDirectory(tmp_path)
    holder.lock()
    with pytest.raises(RunDirectoryError, match="is in use: another tinygrad-rnn process"):
        RunDirectory(tmp_path).lock()
    holder.release()
    again = RunDirectory(tmp_path)  # released: free again
    again.lock()
    again.release()


def test_a_lock_needs_no_write_access_to_the_lock_file(tmp_path, monkeypatch):
    """Another user's .lock (0644) blocked a resume in a shared folder: the lock file is
    opened read-only (a flock needs no write access). Root may write anything, so the
    open's flags are what is checked."""
    opened = []
    real_open = os.open

    def spy(path, flags, *args):
        opened.append(flags)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", spy)
    run = RunDirectory(tmp_path)
    run.lock()
    run.release()
    assert opened and all(flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND) == 0 for flags in opened)


def test_a_file_system_without_locks_trains_unlocked_with_a_warning(tmp_path, monkeypatch,
                                                                    capsys):  # fmt: skip
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    run = RunDirectory(tmp_path)
    run.lock()
    assert run.locked and "cannot be locked" in capsys.readouterr().err


def test_a_lock_file_removed_while_locking_is_not_a_lock(tmp_path, monkeypatch):
    # a refused run gave the folder up (its .lock removed) between our open and our lock
    import fcntl

    real_flock = fcntl.flock

    def flock_after_removal(fd, operation):
        (tmp_path / ".lock").unlink(missing_ok=True)
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_removal)
    with pytest.raises(RunDirectoryError, match="changed while it was being locked"):
        RunDirectory(tmp_path).lock()


def test_resuming_an_older_checkpoint_file_never_overwrites_the_runs_latest(tmp_path):
    out = tmp_path / "run"
    short_sine_run(out)
    old = out / "step2.npz"
    old.write_bytes((out / "checkpoint.npz").read_bytes())
    assert cli("train", "--resume", str(out), "--max-steps", "4", "--quiet").returncode == 0
    latest = (out / "checkpoint.npz").read_bytes()
    result = cli("train", "--resume", str(old), "--max-steps", "3", "--quiet")
    assert_one_line_error(result, f"--resume {old}", "holds another checkpoint (step 4)")
    assert (out / "checkpoint.npz").read_bytes() == latest


def test_metrics_of_a_new_run_never_take_another_runs_test_results(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.99}}))
    trainer = make_stateless(tmp_path, epochs=1)
    trainer.fit()
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == {}


# ---- writes that fail half way -----------------------------------------------------
def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_checkpoint_write_that_fails_says_what_is_kept_and_leaves_no_temp(tmp_path, monkeypatch):
    trainer = make_stateless(tmp_path, epochs=1)
    trainer.fit()
    good = (tmp_path / "checkpoint.npz").read_bytes()

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    trainer.step += 1
    with pytest.raises(CheckpointWriteError, match=r"of step \d+ to .*No space left.*step \d+ is"):
        trainer.save_checkpoint()
    with pytest.raises(OSError, match="No space left"):
        trainer.write_metrics()
    assert (tmp_path / "checkpoint.npz").read_bytes() == good
    assert leftovers(tmp_path) == []


def test_a_plot_that_fails_half_way_leaves_the_old_png_whole(tmp_path, monkeypatch):
    history = [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}]
    path = plots.curves(tmp_path / "curves.png", history, "mse")
    good = path.read_bytes()

    def broken(self, file, **kwargs):
        file.write(b"\x89PNG half")
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", broken)
    with pytest.raises(OSError, match="Input/output error"):
        plots.curves(path, history, "mse")
    assert path.read_bytes() == good and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")]
)
def test_a_plot_takes_its_format_from_its_name(tmp_path, suffix, magic):
    path = plots.curves(tmp_path / f"curves{suffix}", [{"epoch": 1, "train_loss": 1.0}], "mse")
    assert path.read_bytes().startswith(magic)


def test_a_second_ctrl_c_waits_for_the_interrupts_checkpoint(tmp_path, monkeypatch):
    """Ctrl-C saves a checkpoint; a second one during that save used to abort it (the
    CLI still said it was saved). It now waits: the checkpoint is whole and resumes."""
    full = make_stateless(tmp_path / "full")
    full.fit()
    interrupted = make_stateless(tmp_path / "cut")
    interrupt_on_step(interrupted)
    original_save = checkpoint.save

    def save_with_a_second_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return original_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", save_with_a_second_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    monkeypatch.setattr(checkpoint, "save", original_save)
    resumed = make_stateless(tmp_path / "cut")
    resumed.resume(tmp_path / "cut")
    assert resumed.step == 6
    resumed.fit()
    assert_same_weights(weights(full.model), weights(resumed.model))


# ---- tampered checkpoints ----------------------------------------------------------
def rewrite_extra(path, change):
    """Rewrite a checkpoint's metadata through `change(meta)`, arrays as they are."""
    with np.load(path) as loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    change(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as file:
        checkpoint._write_npz(file, arrays)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(extra=[1, 2]), "'extra' must be a dict or null; got list"),
        (lambda m: m["extra"]["options"].update(colour=1), "'options' must be a dict of"),
        (lambda m: m["extra"].pop("recipe"), "'recipe' must be a recipe name"),
        (lambda m: m["extra"].update(epoch=-3), "'epoch' must be an integer >= 0; got -3"),
        (lambda m: m["extra"].update(step="ten"), "'step' must be an integer >= 0; got 'ten'"),
        (lambda m: m["extra"].update(history=5), "'history' must be a list of records"),
        (lambda m: m["extra"].update(rng={"state": 1}), "a generator state does not fit"),
        (lambda m: m["extra"].pop("loader"), "needs its 'loader' position"),
    ],
    ids=["extra-list", "options", "recipe", "epoch", "step", "history", "rng", "loader"],
)
def test_a_tampered_checkpoint_is_refused_in_one_line_and_the_run_is_unchanged(
    tmp_path, change, message
):
    out = tmp_path / "run"
    short_sine_run(out)
    rewrite_extra(out / "checkpoint.npz", change)
    tampered = (out / "checkpoint.npz").read_bytes()
    result = cli("train", "--resume", str(out), "--max-steps", "5", "--quiet")
    assert_one_line_error(result, message)
    assert (out / "checkpoint.npz").read_bytes() == tampered


def test_a_resume_refused_for_a_bad_counter_changes_nothing(tmp_path):
    trainer = make_stateless(tmp_path / "run", epochs=1)
    trainer.fit()
    rewrite_extra(tmp_path / "run" / "checkpoint.npz", lambda m: m["extra"].update(epoch=-1))
    fresh = make_stateless(tmp_path / "run")
    before, position = weights(fresh.model), fresh.loader.state_dict()
    with pytest.raises(checkpoint.CheckpointError, match="'epoch' must be an integer >= 0"):
        fresh.resume(tmp_path / "run")
    assert_same_weights(before, weights(fresh.model))
    assert fresh.loader.state_dict() == position and fresh.optimizer.state_dict() == (
        make_stateless().optimizer.state_dict()
    )


def fill_first_parameter(path, value) -> str:
    """Rewrite a checkpoint with its first stored parameter all `value`; its name."""
    with np.load(path) as loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    name = next(k for k in arrays if k.startswith("param/"))
    arrays[name] = np.full_like(arrays[name], value)
    with open(path, "wb") as file:
        checkpoint._write_npz(file, arrays)
    return name


def test_evaluate_refuses_a_checkpoint_with_non_finite_weights_in_one_line(tmp_path):
    out = tmp_path / "run"
    short_sine_run(out)
    fill_first_parameter(out / "checkpoint.npz", np.inf)
    assert_one_line_error(cli("evaluate", str(out)), "holds nan or inf")


def test_non_finite_weights_load_as_written_but_never_resume(tmp_path):
    trainer = make_stateless(tmp_path, epochs=1)
    trainer.fit()
    path = tmp_path / "checkpoint.npz"
    name = fill_first_parameter(path, np.nan)
    model = make_stateless().model
    checkpoint.load(path, model)  # as written: a diverged model may be looked at
    assert np.isnan(model.state_dict()[name[len("param/") :]]).all()
    with pytest.raises(checkpoint.CheckpointError, match="holds nan or inf"):
        checkpoint.load(path, make_stateless().model, require_finite=True)
    with pytest.raises(checkpoint.CheckpointError, match="holds nan or inf"):
        make_stateless(tmp_path).resume(tmp_path)


def test_a_new_run_refused_before_writing_leaves_no_folder_behind(tmp_path):
    # the folder is claimed before the recipe is prepared, which may still refuse
    made, existing = tmp_path / "new", tmp_path / "empty"
    existing.mkdir()
    for out in (made, existing):
        result = cli("train", "sine", "--embedding-std", "1", "--out", str(out))
        assert_one_line_error(result, "embedding")
    assert not made.exists()
    assert existing.is_dir() and list(existing.iterdir()) == []
    nested = tmp_path / "a" / "b" / "c"  # the folders made on the way go too
    assert_one_line_error(cli("train", "sine", "--embedding-std", "1", "--out", str(nested)),
                          "embedding")  # fmt: skip
    assert not (tmp_path / "a").exists()


# ---- mutation audit (s7): run-directory rules the suite did not pin -------------------
# Needs nothing beyond test_run_files.py's imports (errno, pytest, RunDirectory,
# RunDirectoryError); tempfile is imported inside the test that patches it.


def test_an_out_holding_only_a_metrics_json_already_holds_a_run(tmp_path):
    """metrics.json alone is a run too (one that validated, or another run's report): a
    new run writing its own there would mix two runs' records. Only checkpoint.npz was
    checked by the suite, so dropping metrics.json from the run files passed."""
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(RunDirectoryError, match=r"already holds a run \(metrics\.json\)"):
        RunDirectory.claim_new(tmp_path, given=True)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("given", [True, False])
def test_a_new_run_into_a_folder_it_cannot_write_is_refused_before_training(tmp_path,
                                                                          monkeypatch, given):
    """A folder that exists but cannot be written (a read-only mount, another user's)
    must be refused when it is claimed, not after the first epoch's checkpoint fails.
    Root writes anything, so the file system's refusal is simulated; no test checked the
    claim's writability at all (dropping the check passed)."""
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(RunDirectoryError, match="expected a writable directory.*Read-only"):
        RunDirectory.claim_new(tmp_path / "run", given=given)


def test_tidying_a_run_that_wrote_something_keeps_its_files_and_its_lock(tmp_path):
    """tidy_if_unused runs on every way a new run ends badly, a Ctrl-C after its first
    checkpoint included: a folder holding anything but the lock is in use, and its .lock
    must stay (removed while held, a second process could lock a fresh .lock beside us).
    Tidying unconditionally passed the suite."""
    run = RunDirectory.claim_new(tmp_path / "run", given=True)
    run.lock()
    (run.path / "checkpoint.npz").write_bytes(b"written")
    run.tidy_if_unused()
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "checkpoint.npz"]
    run.release()
    unused = RunDirectory.claim_new(tmp_path / "unused", given=True)
    unused.lock()
    unused.tidy_if_unused()  # nothing written: the folder it made goes
    unused.release()
    assert not (tmp_path / "unused").exists()


def test_a_ctrl_c_before_a_new_run_writes_leaves_no_folder_behind(tmp_path, monkeypatch):
    """A Ctrl-C while the recipe is prepared (PTB's vocabulary takes seconds) is a new
    run that stopped before writing: like a refusal, it must take away the folders it
    made. Every test stopped the run with an Exception, so tidying on `except Exception`
    (a KeyboardInterrupt skipping it) passed."""
    from tinygrad_rnn import cli as command
    from tinygrad_rnn.train import recipes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipes, "prepare", interrupted)
    out = tmp_path / "a" / "run"
    with pytest.raises(KeyboardInterrupt):
        command.main(["train", "sine", "--max-steps", "2", "--quiet", "--out", str(out)])
    assert not (tmp_path / "a").exists()


def test_resuming_through_a_link_to_the_runs_own_checkpoint_is_not_refused(tmp_path):
    out = tmp_path / "run"
    short_sine_run(out)
    (out / "latest.npz").symlink_to("checkpoint.npz")
    result = cli("train", "--resume", str(out / "latest.npz"), "--max-steps", "4", "--quiet")
    assert result.returncode == 0, result.stderr


def test_a_checkpoint_from_before_validation_pending_resumes_with_none_pending(tmp_path):
    trainer = make_stateless(tmp_path / "run", epochs=1, max_steps=3)
    trainer.fit()
    rewrite_extra(tmp_path / "run" / "checkpoint.npz",
                  lambda m: m["extra"].pop("validation_pending"))  # fmt: skip
    resumed = make_stateless(tmp_path / "run")
    resumed.resume(tmp_path / "run")
    assert resumed.validation_pending is False and resumed.step == 3


def test_a_first_save_that_fails_over_another_file_says_that_file_is_as_it_was(
    tmp_path, monkeypatch
):
    (tmp_path / "checkpoint.npz").write_bytes(b"someone else's")
    trainer = make_stateless(tmp_path, epochs=1)

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(CheckpointWriteError, match="the file there is as it was"):
        trainer.save_checkpoint()
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"someone else's"
