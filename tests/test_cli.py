"""The `tinygrad-rnn` command, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_data_path
from plugin_factory import GOOD_PLUGIN, write_plugin

from tinygrad_rnn.backend import get_backend

REPO = Path(__file__).resolve().parents[1]


def cli(
    *args: str, path: Path | None = None, timeout: int = 300, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(REPO)}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), str(REPO)])
    return subprocess.run(
        [sys.executable, "-m", "tinygrad_rnn.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_train_sine_writes_metrics_checkpoint_and_plots(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "sine", "--max-steps", "5", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mse", "noise_variance", "mse_clean"} <= set(metrics["test"])
    assert metrics["history"] and metrics["throughput"] > 0
    for name in ("checkpoint.npz", "prediction.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name

    evaluated = cli("evaluate", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["mse"] == pytest.approx(metrics["test"]["mse"], rel=1e-5)
    valid = cli("evaluate", str(out), "--split", "valid")
    assert json.loads(valid.stdout)["split"] == "valid"
    assert json.loads(valid.stdout)["loss"] == pytest.approx(
        metrics["history"][-1]["valid_loss"], rel=1e-5
    )

    generated = cli("generate", str(out), "--length", "7")
    assert generated.returncode == 0, generated.stderr
    assert len(json.loads(generated.stdout)["continuation"]) == 7
    # A series has nothing to sample: the LM flags are refused, not ignored.
    refused = cli("generate", str(out), "--temperature", "0.5", "--seed", "3")
    assert_one_line_error(refused, "--temperature, --seed:", "for language models")



def short_sine_run(out: Path, *flags: str) -> dict:
    """`train sine FLAGS` for 2 steps into `out`; its metrics.json."""
    result = cli("train", "sine", *flags, "--max-steps", "2", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return json.loads((out / "metrics.json").read_text())


def test_cell_flag_offers_every_cell_the_topologies_build():
    import topologies
    from tinygrad_rnn.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    cell = next(a for a in train._actions if a.dest == "cell")
    assert tuple(cell.choices) == topologies.CELLS


def test_relu_rnn_cell_trains_and_is_rebuilt_from_its_checkpoint(tmp_path):
    metrics = short_sine_run(tmp_path / "run", "--cell", "rnn_relu")
    assert metrics["config"]["spec"]["cell"] == "rnn_relu"
    evaluated = cli("evaluate", str(tmp_path / "run"))
    assert evaluated.returncode == 0, evaluated.stderr


def test_max_steps_none_on_resume_lifts_the_runs_own_limit(tmp_path):
    out = tmp_path / "run"
    short_sine_run(out, "--epochs", "1")  # stopped by its own --max-steps 2
    again = cli("train", "--resume", str(out), "--quiet")
    assert_one_line_error(again, "--max-steps 2 (the run's own", "--max-steps none")
    result = cli("train", "--resume", str(out), "--max-steps", "none", "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    steps_per_epoch = metrics["history"][-1]["step"]  # the one epoch, trained to its end
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == steps_per_epoch > 2
    assert metrics["config"]["train"]["max_steps"] is None


@pytest.mark.parametrize("bad", ["0", "-3", "1.5", "nonee"])
def test_max_steps_takes_a_positive_integer_or_none(bad):
    assert_one_line_error(cli("train", "sine", "--max-steps", bad), "--max-steps", repr(bad))


def test_init_flag_reaches_the_model_and_the_checkpoint(tmp_path):
    metrics = short_sine_run(tmp_path / "run", "--init", "textbook")
    assert metrics["config"]["spec"]["init"] == "textbook"
    evaluated = cli("evaluate", str(tmp_path / "run"))  # rebuilt from the checkpoint alone
    assert evaluated.returncode == 0, evaluated.stderr


def test_threads_flag_sets_the_library_threads_and_metrics_say_so(tmp_path):
    metrics = short_sine_run(tmp_path / "run", "--threads", "1")
    assert metrics["threads"] == {"library": 1, "blas": 1}


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
@pytest.mark.parametrize("command", [("train", "sine"), ("evaluate", "runs/none")])
def test_bad_threads_is_one_clear_line(command, bad):
    assert_one_line_error(cli(*command, "--threads", bad), "--threads", repr(bad))


def test_bad_init_is_one_clear_line():
    assert_one_line_error(cli("train", "sine", "--init", "xavier"), "--init", "xavier")


BAD_NUMBERS = {  # flag: values its parser refuses
    "--embedding-std": ["0", "-1", "nan", "inf", "wide"],
    "--forget-bias": ["nan", "inf", "one"],
    "--lr-decay": ["0.5", "0", "nan", "fast"],
    "--clip-percentile": ["0", "101", "nan", "most"],
    "--min-padding": ["-1", "1.5", "one"],
    "--seed": ["-1", "1.5"],
}


@pytest.mark.parametrize(
    "flag, bad", [(flag, bad) for flag, values in BAD_NUMBERS.items() for bad in values]
)
def test_a_bad_number_for_a_training_flag_is_one_clear_line(flag, bad):
    assert_one_line_error(cli("train", "date", flag, bad), flag, repr(bad))


@pytest.mark.parametrize(
    "flag, bad", [("--length", "0"), ("--length", "-5"), ("--temperature", "-1"),
                  ("--temperature", "nan"), ("--top-k", "0"), ("--seed", "-2")],  # fmt: skip
)
def test_a_bad_number_for_generate_is_one_clear_line(flag, bad):
    assert_one_line_error(cli("generate", "runs/none", flag, bad), flag, repr(bad))


def test_forget_bias_on_a_cell_without_a_forget_gate_is_one_clear_line():
    result = cli("train", "sine", "--cell", "gru", "--forget-bias", "1")
    assert_one_line_error(result, "forget_bias needs cell='lstm'", "'gru'")


@pytest.mark.parametrize("flag, expected", [("3", 3.0), ("1", None)])
def test_lr_decay_flag_sets_the_schedule_and_one_keeps_the_lr_constant(tmp_path, flag, expected):
    metrics = short_sine_run(tmp_path / "run", "--lr-decay", flag)
    assert metrics["config"]["train"]["lr_decay"] == expected


def test_clip_percentile_flag_reaches_the_config(tmp_path):
    metrics = short_sine_run(tmp_path / "run", "--clip-percentile", "10")
    assert metrics["config"]["train"]["clip_percentile"] == 10.0


def test_embedding_std_on_a_recipe_without_embedding_is_one_clear_line():
    assert_one_line_error(
        cli("train", "sine", "--embedding-std", "0.5"), "--embedding-std", "'sine' has no embedding"
    )


@pytest.mark.parametrize(
    "recipe, flags, named",
    [
        ("sine", ["--attention"], "--attention"),
        ("sine", ["--data", "x.txt"], "--data"),
        ("ptb", ["--min-padding", "0", "--peeky"], "--peeky, --min-padding"),
        ("addition", ["--large"], "--large"),
        ("waves", ["--no-reverse"], "--reverse/--no-reverse"),
    ],
)
def test_a_flag_the_recipe_does_not_read_is_one_clear_line(recipe, flags, named):
    """Not silently ignored: the line names the flags and what the recipe takes."""
    assert_one_line_error(cli("train", recipe, *flags), f"recipe {recipe!r} does not read {named}")


def test_options_a_checkpoint_stored_are_taken_as_they_are():
    """Runs from before the check stored flags their recipe ignored: evaluating or
    resuming them must still work, so only a new run's options are checked."""
    from tinygrad_rnn.train.recipes import Options, check_options, prepare

    stored = Options(large=True, attention=True, max_steps=2)
    with pytest.raises(ValueError, match="does not read --large, --attention"):
        check_options("sine", stored)
    assert prepare("sine", stored).spec.hidden_size == 32


def test_a_diverged_run_ends_with_one_line_and_exit_status_1(tmp_path):
    result = cli("train", "sine", "--lr", "1e30", "--max-steps", "30", "--quiet",
                 "--out", str(tmp_path / "run"))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tinygrad-rnn: diverged: the loss became") and "smaller lr" in last


def test_a_cell_setting_for_a_topology_without_recurrence_is_one_clear_line():
    result = cli("train", "sine", "--topology", "one-to-one", "--cell", "gru", "--forget-bias",
                 "1")  # fmt: skip
    assert_one_line_error(result, "--cell, --forget-bias: topology 'one-to-one' has no recurrent")


def test_a_relative_data_path_is_kept_absolute_so_evaluate_works_from_anywhere(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 600)
    out = tmp_path / "run"
    result = cli("train", "text", "--data", "tiny.txt", "--max-steps", "2", "--hidden-size",
                 "8", "--batch-size", "4", "--quiet", "--out", str(out), cwd=work)  # fmt: skip
    assert result.returncode == 0, result.stderr
    evaluated = cli("evaluate", str(out))  # from the repository, not from work/
    assert evaluated.returncode == 0, evaluated.stderr


def test_ctrl_c_during_training_saves_and_ends_with_status_130(tmp_path, monkeypatch, capsys):
    from tinygrad_rnn import cli as command
    from tinygrad_rnn.train import Trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    out = tmp_path / "run"
    status = command.main(["train", "sine", "--max-steps", "2", "--quiet", "--out", str(out)])
    assert status == 130
    assert f"interrupted: checkpoint saved in {out}" in capsys.readouterr().err


def test_ctrl_c_during_the_final_report_says_where_the_run_is(tmp_path, monkeypatch, capsys):
    """Training is done and checkpointed; the interrupted report ends with a line naming
    the run directory and status 130, not a traceback."""
    from tinygrad_rnn import cli as command
    from tinygrad_rnn.train import Trainer

    original = Trainer.evaluate
    calls = {"n": 0}

    def evaluate(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the first is the epoch's validation, the second the report's
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    out = tmp_path / "run"
    status = command.main(["train", "sine", "--max-steps", "2", "--quiet", "--out", str(out)])
    assert status == 130
    assert f"interrupted during the final report; the trained run is in {out}" in (
        capsys.readouterr().err
    )
    assert (out / "checkpoint.npz").exists()


def test_resume_continues_a_run(tmp_path):
    out = tmp_path / "run"
    assert cli("train", "sine", "--max-steps", "3", "--out", str(out), "--quiet").returncode == 0
    result = cli("train", "--resume", str(out), "--max-steps", "6", "--quiet", "--backend",
                 "numpy")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == 6 and "epoch=1 step=6" not in result.stderr
    loud = cli("train", "--resume", str(out), "--max-steps", "7")  # quiet is the call's own
    assert loud.returncode == 0 and "epoch=1 step=7" in loud.stderr, loud.stderr
    # Asking a resumed run to stop where it already is trains nothing: refused, and said,
    # whether the cap is given again or is the run's own.
    again = cli("train", "--resume", str(out), "--max-steps", "5", "--quiet")
    assert_one_line_error(again, "--max-steps 5: the checkpoint is at step 7 already")
    own = cli("train", "--resume", str(out), "--epochs", "9", "--quiet")
    assert_one_line_error(own, "--max-steps 7 (the run's own, from its checkpoint)")
    # What the run was set up with is its own: a flag for it would be ignored, so refused.
    changed = cli("train", "--resume", str(out), "--max-steps", "9", "--lr", "5", "--out", "x")
    assert_one_line_error(changed, "--resume continues a 'sine' run", "not --lr, --out")
    other = cli("train", "waves", "--resume", str(out), "--max-steps", "9")
    assert_one_line_error(other, "not recipe 'waves'")
    assert (out / "checkpoint.npz").exists()


def test_text_lm_trains_and_samples(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 600)
    out = tmp_path / "run"
    result = cli(
        "train",
        "text",
        "--data",
        str(corpus),
        "--max-steps",
        "4",
        "--hidden-size",
        "16",
        "--batch-size",
        "4",
        "--embedding-std",
        "0.5",
        "--forget-bias",
        "1",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert "perplexity" in metrics["test"]
    assert metrics["config"]["spec"]["embedding_std"] == 0.5
    assert metrics["config"]["spec"]["forget_bias"] == 1.0
    # evaluate gives the report's test number (10 lanes) and the run's own validation
    # number (its eval_batch_size, 16 here: it used 10 lanes for both)
    for split, expected in (("test", metrics["test"]["perplexity"]),
                            ("valid", metrics["history"][-1]["valid_perplexity"])):  # fmt: skip
        evaluated = cli("evaluate", str(out), "--split", split)
        assert evaluated.returncode == 0, evaluated.stderr
        assert json.loads(evaluated.stdout)["perplexity"] == pytest.approx(expected, rel=1e-5)
    sample = cli(
        "generate",
        str(out),
        "--prompt",
        "the ",
        "--length",
        "20",
        "--top-k",
        "5",
        "--temperature",
        "0.8",
    )
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("the ")
    empty = cli("generate", str(out), "--prompt", "")
    assert_one_line_error(empty, "--prompt '': give at least one token")

    def sample(*flags):
        done = cli("generate", str(out), "--prompt", "the ", "--length", "30", *flags)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert sample("--seed", "1") == sample("--seed", "1") != sample("--seed", "2")
    assert sample("--top-k", "1", "--seed", "3") == sample("--temperature", "0")  # greedy


def test_a_word_prompts_line_breaks_are_read_as_the_corpus_was(tmp_path):
    """PTB's reader turns each line break into <eos>; a multi-line --prompt must be read
    the same way (it was split on whitespace, its breaks dropped) and echoed with them."""
    out = tmp_path / "run"
    trained = cli("train", "ptb", "--max-steps", "1", "--data", shared_data_path("ptb"),
                  "--out", str(out), "--quiet")  # fmt: skip
    assert trained.returncode == 0, trained.stderr

    def generate(prompt):
        done = cli("generate", str(out), "--prompt", prompt, "--length", "6", "--temperature", "0")
        assert done.returncode == 0, done.stderr
        return done.stdout

    text = generate("the company said\nit expects")
    assert text.startswith("the company said\nit expects ")
    assert text == generate("the company said <eos> it expects")


def test_unknown_recipe_is_one_clear_line():
    assert_one_line_error(cli("train", "sinus"), "unknown recipe", "sinus", "sine")


def test_unknown_topology_is_one_clear_line():
    assert_one_line_error(
        cli("train", "sine", "--topology", "many-to-few"), "many-to-few", "many-to-one"
    )


def test_topology_that_does_not_suit_the_recipe():
    assert_one_line_error(cli("train", "sine", "--topology", "seq2seq"), "does not suit", "sine")


def test_missing_data_file_is_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere.txt"
    assert_one_line_error(cli("train", "text", "--data", str(missing)), str(missing))


@pytest.mark.skipif(get_backend("cupy").unavailable_reason() is None, reason="CuPy is available")
def test_cupy_unavailable_is_one_clear_line():
    assert_one_line_error(cli("train", "sine", "--backend", "cupy"), "cupy")


def test_backends_lists_numpy_and_says_why_not_cupy():
    result = cli("backends")
    assert result.returncode == 0
    assert "numpy    available" in result.stdout
    if get_backend("cupy").unavailable_reason() is not None:  # said, with the reason
        assert "cupy     unavailable: backend 'cupy' needs" in result.stdout
    else:
        assert "cupy     available" in result.stdout


def test_out_of_tree_plugin_is_listed_and_trains_from_the_cli(tmp_path):
    root = write_plugin(
        tmp_path / "site", "meanplugin", "meanplugin", GOOD_PLUGIN, "mean-over-time", "MeanOverTime"
    )
    listing = cli("topologies", path=root)
    assert listing.returncode == 0, listing.stderr
    assert "mean-over-time" in listing.stdout and "many-to-one" in listing.stdout
    assert "(alias: m2o)" in listing.stdout and "(alias: seq2seq)" in listing.stdout
    out = tmp_path / "run"
    result = cli(
        "train",
        "sine",
        "--topology",
        "mean-over-time",
        "--max-steps",
        "3",
        "--out",
        str(out),
        "--quiet",
        path=root,
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["topology_name"] == "mean-over-time"


# ---- mutation audit (s7) ---------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["none", "None", "NONE", " none "])
def test_max_steps_none_is_taken_in_any_case(spelling):
    """`--max-steps None` (as Python prints it) lifts the limit like `none`: the parser
    folds case and spaces. Only the lower-case spelling was tried, so an exact match passed."""
    from tinygrad_rnn.cli import NO_STEP_LIMIT, build_parser

    args = build_parser().parse_args(["train", "sine", "--max-steps", spelling])
    assert args.max_steps == NO_STEP_LIMIT
