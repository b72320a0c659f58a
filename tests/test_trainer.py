"""The Trainer: both loops, validation isolation, schedule, divergence,
interrupts, checkpoints and exact resume."""

from __future__ import annotations

import json
import math
import os
import re
import signal

import numpy as np
import pytest

import tinygrad_rnn as tr
import topologies
from tinygrad_rnn.data import noisy_sine, sliding_windows
from tinygrad_rnn.train import TrainConfig, Trainer, TrainingDivergedError


def sine_windows(n: int = 300, window: int = 8):
    series = noisy_sine(n, 25, 0.05, seed=3)
    X, Y = sliding_windows(series, window)
    return (X[:200], Y[:200]), (X[200:], Y[200:])


def token_stream(n: int = 2000, vocab: int = 7):
    # A learnable stream: each token mostly follows from the previous one.
    rng = np.random.default_rng(5)
    ids = np.zeros(n, dtype=np.int64)
    for i in range(1, n):
        ids[i] = (ids[i - 1] + 1) % vocab if rng.random() < 0.9 else rng.integers(vocab)
    return ids


def make_stateless(tmp_path=None, **config):
    tr.manual_seed(0)
    train, valid = sine_windows()
    topo = topologies.create("many-to-one")
    spec = topologies.ModelSpec(cell="lstm", hidden_size=8, input_size=1)
    model = topo.build(spec)
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": 1e-2, "quiet": True, **config})
    return Trainer(topo, model, cfg, train, valid, out_dir=tmp_path, extra={"spec": spec.to_dict()})


def make_stateful(tmp_path=None, **config):
    tr.manual_seed(0)
    ids = token_stream()
    topo = topologies.create("synced")
    spec = topologies.ModelSpec(
        cell="gru",
        hidden_size=12,
        vocab_size=7,
        embedding_size=6,
        output_size=7,
        head="probabilities",
    )
    model = topo.build(spec)
    cfg = TrainConfig(
        **{
            "epochs": 2,
            "batch_size": 4,
            "time_size": 10,
            "lr": 1e-2,
            "shuffle": False,
            "quiet": True,
            **config,
        }
    )
    return Trainer(topo, model, cfg, ids[:1600], ids[1600:], out_dir=tmp_path)


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"batch_size": 400}, r"train split \(batch_size=400, time_size=10\): data of length 1600"),
        ({"eval_batch_size": 100}, r"valid split \(eval_batch_size=100, time_size=10\): .* 400"),
        ({"eval_time_size": 200}, r"valid split \(eval_batch_size=4, time_size=200\): .* 400"),
    ],
)
def test_a_split_too_short_for_its_batches_is_refused_before_training_naming_it(sizes, message):
    """Refused when the Trainer is built, not after an epoch of steps that would be lost."""
    with pytest.raises(ValueError, match=message):
        make_stateful(**sizes)


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("make", [make_stateless, make_stateful])
def test_training_lowers_the_validation_loss(make):
    trainer = make(epochs=1)
    before = trainer.evaluate(trainer.valid_data)["loss"]
    trainer.fit()
    after = trainer.history[-1]["valid_loss"]
    assert after < before * 0.9


def test_stateful_trainer_refuses_shuffling():
    with pytest.raises(ValueError, match="shuffl"):
        make_stateful(shuffle=True)


def test_stateful_loop_carries_the_state_and_resets_at_epoch_start():
    trainer = make_stateful(epochs=1, max_steps=3)
    seen = []
    original = trainer.topology.loss

    def spy(model, inputs, targets, state=None):
        seen.append(state)
        return original(model, inputs, targets, state)

    trainer.topology.loss = spy
    trainer.fit()
    assert seen[0] is None  # epoch start: fresh state
    assert seen[1] is not None and seen[1].is_leaf  # carried, cut from the graph


def test_validation_leaves_the_training_carry_alone():
    trainer = make_stateful(epochs=1, max_steps=2)
    trainer.fit()
    carried = trainer.carried.numpy().copy()
    trainer.evaluate(trainer.valid_data)
    np.testing.assert_array_equal(trainer.carried.numpy(), carried)


def test_same_seed_same_run():
    a, b = make_stateless(epochs=1), make_stateless(epochs=1)
    a.fit()
    b.fit()
    assert_same_weights(weights(a.model), weights(b.model))


def test_a_validation_equal_to_the_best_is_no_improvement():
    trainer = make_stateless(lr_decay=4.0)
    trainer._schedule(1.0)
    trainer._schedule(1.0)
    assert trainer.bad_epochs == 1 and trainer.optimizer.lr == pytest.approx(1e-2 / 4)


def test_each_epochs_train_loss_is_its_steps_losses_weighted_by_their_batches():
    """200 windows at batch 16: 12 batches of 16, one of 8."""
    trainer = make_stateless(epochs=2)
    trainer.fit()
    steps = len(trainer.loader)
    sizes = [16] * 12 + [8]
    for epoch, record in enumerate(trainer.history):
        losses = trainer.step_losses[epoch * steps : (epoch + 1) * steps]
        expected = sum(loss * n for loss, n in zip(losses, sizes)) / 200
        assert record["train_loss"] == pytest.approx(expected, rel=1e-9)


def test_a_stateful_validation_is_one_pass_whatever_its_truncation():
    """The state is carried from batch to batch in evaluation too: 9 batches of 10 steps
    read each lane as one batch of 90 steps does."""
    trainer = make_stateful(eval_time_size=10)
    short = trainer.evaluate(trainer.valid_data)["loss"]
    trainer.config.eval_time_size = 90
    assert trainer.evaluate(trainer.valid_data)["loss"] == pytest.approx(short, rel=1e-5)


def test_lr_is_divided_when_validation_stops_improving():
    trainer = make_stateless(lr_decay=4.0, patience=2)
    trainer._schedule(1.0)
    trainer._schedule(0.5)
    assert trainer.optimizer.lr == pytest.approx(1e-2)
    trainer._schedule(0.7)
    assert trainer.optimizer.lr == pytest.approx(1e-2 / 4)
    assert not trainer.stopped_early
    trainer._schedule(0.6)
    assert trainer.stopped_early


def gradient_norms_at_the_update(trainer: Trainer) -> list[float]:
    """Filled as training runs: the gradients' joint norm as each optimizer step sees it."""
    seen = []
    original = trainer.optimizer.step

    def step():
        params = trainer.model.parameters()
        seen.append(math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params)))
        original()

    trainer.optimizer.step = step
    return seen


@pytest.mark.parametrize("clip", [None, 0.05])
def test_a_fixed_clip_bounds_every_steps_gradient_and_none_leaves_them(clip):
    trainer = make_stateless(epochs=1, clip=clip)
    seen = gradient_norms_at_the_update(trainer)
    trainer.fit()
    assert len(seen) == trainer.step > 0
    if clip is None:  # unclipped: these early sine gradients are well above 0.05
        assert max(seen) > 0.1
    else:
        assert max(seen) <= clip * (1 + 1e-5)
        assert sum(n > clip * 0.999 for n in seen) > trainer.step // 2  # it binds


def test_autoclip_clips_every_step_to_the_percentile_of_the_norms_so_far():
    trainer = make_stateless(epochs=1, clip=1e3, clip_percentile=25.0)
    seen = gradient_norms_at_the_update(trainer)  # against the clipper's record
    trainer.fit()
    history = trainer.clipper.history
    assert len(history) == len(seen) == trainer.step
    for i, norm in enumerate(seen):
        bound = min(np.percentile(history[: i + 1], 25.0), 1e3)
        before = history[i]  # clipped as PyTorch does: by bound / (norm + 1e-6) above it
        expected = before * bound / (before + 1e-6) if before > bound else before
        assert norm == pytest.approx(expected, rel=1e-4)
    assert sum(h > n * 1.01 for h, n in zip(history, seen)) > trainer.step // 2  # it binds


BAD_CONFIG = {  # field: (values refused, the bound the message states)
    "epochs": ([0, 1.5, math.nan, "2", True], "an integer >= 1"),
    "batch_size": ([0, -3, 2.0], "an integer >= 1"),
    "eval_batch_size": ([0, 1.5], "an integer >= 1 or None"),
    "max_steps": ([0, math.nan], "an integer >= 1 or None"),
    "checkpoint_every": ([0, math.nan], "an integer >= 1 or None"),
    "patience": ([-1, 0.5], "an integer >= 0 or None"),
    "lr": ([0, -1.0, math.nan, math.inf], "a finite number > 0"),
    "momentum": ([1.0, -0.1, math.nan], "a finite number in [0, 1)"),
    "clip": ([0, -1.0, math.nan], "a finite number > 0"),
    "clip_percentile": ([0, -1.0, 100.5, math.nan], "a finite number in (0, 100]"),
    "lr_decay": ([1, 0.5, math.nan, math.inf], "a finite number > 1 (lr is divided by it)"),
}


@pytest.mark.parametrize(
    "field, bad", [(field, bad) for field, (values, _) in BAD_CONFIG.items() for bad in values]
)
def test_a_bad_config_value_is_refused_naming_the_field_bound_and_value(field, bad):
    """Refused at once: lr_decay=nan used to train on, then write an unresumable checkpoint."""
    bound = BAD_CONFIG[field][1]
    with pytest.raises(ValueError, match=re.escape(f"{field} must be {bound}; got {bad!r}")):
        TrainConfig(**{field: bad})


def test_metrics_json_is_rewritten_after_every_epoch(tmp_path):
    trainer = make_stateless(tmp_path, epochs=2)
    epochs_seen = []
    original = trainer.save_checkpoint

    def spy():
        path = original()
        epochs_seen.append(
            len(json.loads((tmp_path / "metrics.json").read_text())["history"])
            if (tmp_path / "metrics.json").exists()
            else 0
        )
        return path

    trainer.save_checkpoint = spy
    trainer.fit()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["config"]["train"]["batch_size"] == 16
    assert epochs_seen[-1] >= 1


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make_stateless(tmp_path, epochs=3)
    trainer.config.epochs = 1
    trainer.fit()
    good = (tmp_path / "checkpoint.npz").read_bytes()
    trainer.config.epochs = 3
    original = trainer.topology.loss
    calls = {"n": 0}

    def poisoned(model, inputs, targets, state=None):
        out = original(model, inputs, targets, state)
        calls["n"] += 1
        if calls["n"] == 3:
            out = out._replace(loss=out.loss * float("nan"))
        return out

    trainer.topology.loss = poisoned
    with pytest.raises(TrainingDivergedError, match="nan"):
        trainer.fit()
    assert (tmp_path / "checkpoint.npz").read_bytes() == good


@pytest.mark.parametrize("clip", [{}, {"clip_percentile": 10.0}], ids=["plain", "autoclip"])
@pytest.mark.parametrize("make", [make_stateless, make_stateful])
def test_resume_mid_epoch_ends_with_the_same_weights(tmp_path, make, clip):
    full = make(tmp_path / "full", **clip)
    full.fit()
    steps_per_epoch = len(full.loader)

    first = make(tmp_path / "cut", max_steps=steps_per_epoch + 3, **clip)  # stop mid-epoch 2
    first.fit()
    second = make(tmp_path / "cut", **clip)
    second.resume(tmp_path / "cut")
    if clip:  # AutoClip's norms came back with the checkpoint: it clips as before the cut
        assert second.clipper.history == first.clipper.history
    assert second.step == steps_per_epoch + 3
    second.fit()
    assert second.step == full.step
    assert_same_weights(weights(full.model), weights(second.model))


def make_with_dropout(tmp_path=None, bits=np.random.PCG64, **config):
    """A stateful LM with dropout, drawn from a generator of its own passed to build (of
    bit generator `bits`), or from the library's (bits None)."""
    tr.manual_seed(0)
    ids = token_stream()
    topo = topologies.create("synced")
    spec = topologies.ModelSpec(
        cell="lstm", hidden_size=12, vocab_size=7, embedding_size=6, output_size=7,
        head="probabilities", num_layers=2, dropout=0.3,
    )  # fmt: skip
    model = topo.build(spec, generator=None if bits is None else np.random.Generator(bits(7)))
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 4, "time_size": 10, "lr": 1e-2,
                         "quiet": True, **config})  # fmt: skip
    return Trainer(topo, model, cfg, ids[:1600], ids[1600:], out_dir=tmp_path)


@pytest.mark.parametrize("bits", [np.random.PCG64, np.random.MT19937, np.random.Philox])
def test_resume_restores_the_generators_the_layers_draw_their_dropout_from(tmp_path, bits):
    """Any bit generator: an MT19937 state holds an array, which JSON needed as a list."""
    full = make_with_dropout(tmp_path / "full", bits)
    full.fit()
    first = make_with_dropout(tmp_path / "cut", bits, max_steps=len(full.loader) + 3)
    first.fit()
    second = make_with_dropout(tmp_path / "cut", bits)
    second.resume(tmp_path / "cut")
    second.fit()
    assert_same_weights(weights(full.model), weights(second.model))


def test_resume_restores_the_librarys_generator_for_dropout_drawn_from_it(tmp_path):
    """A model built without a generator of its own draws its dropout from the library's:
    the checkpoint's state of it, not whatever the process seeded, goes on."""
    full = make_with_dropout(tmp_path / "full", None)
    full.fit()
    make_with_dropout(tmp_path / "cut", None, max_steps=len(full.loader) + 3).fit()
    second = make_with_dropout(tmp_path / "cut", None)
    tr.manual_seed(123)  # what a new process might have drawn
    second.resume(tmp_path / "cut")
    second.fit()
    assert_same_weights(weights(full.model), weights(second.model))


def interrupt_on_step(trainer, call: int = 7) -> None:
    """Ctrl-C as the trainer's optimizer is about to take its `call`-th step."""
    original_step = trainer.optimizer.step
    calls = {"n": 0}

    def step_then_interrupt():
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        original_step()

    trainer.optimizer.step = step_then_interrupt


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    full = make_stateful(tmp_path / "full")
    full.fit()

    interrupted = make_stateful(tmp_path / "cut")
    interrupt_on_step(interrupted)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make_stateful(tmp_path / "cut")
    resumed.resume(tmp_path / "cut")
    assert resumed.step == 6
    resumed.fit()
    assert_same_weights(weights(full.model), weights(resumed.model))


@pytest.mark.parametrize("call", [1, 5], ids=["first-step", "fifth-step"])
@pytest.mark.parametrize("bits", [None, np.random.PCG64], ids=["library", "own"])
def test_ctrl_c_after_a_steps_forward_drew_its_dropout_resumes_exactly(tmp_path, bits, call):
    """The forward draws the step's dropout masks before the step counts: a Ctrl-C in
    its backward must save the generators as they were before those draws (they were
    saved as they are, and the resumed run redid the step with other masks)."""
    full = make_with_dropout(tmp_path / "full", bits)
    full.fit()
    interrupted = make_with_dropout(tmp_path / "cut", bits)
    original_loss = interrupted.topology.loss
    calls = {"n": 0}

    def loss_then_interrupt(*args, **kwargs):
        out = original_loss(*args, **kwargs)  # the masks are drawn
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return out

    interrupted.topology.loss = loss_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make_with_dropout(tmp_path / "cut", bits)
    resumed.resume(tmp_path / "cut")
    assert resumed.step == call - 1
    resumed.fit()
    assert_same_weights(weights(full.model), weights(resumed.model))


def test_ctrl_c_while_an_epoch_draws_its_order_resumes_exactly(tmp_path):
    """iter() draws the new epoch's order; a Ctrl-C before the trainer took the new
    position saved that order with the last epoch's position, and the resume drew
    another order."""
    full = make_stateless(tmp_path / "full")
    full.fit()
    interrupted = make_stateless(tmp_path / "cut")
    loader, draw = interrupted.loader, interrupted.loader._new_epoch
    calls = {"n": 0}

    def draw_then_sigint():  # Ctrl-C right after epoch 2's order is drawn
        draw()
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    loader._new_epoch = draw_then_sigint
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make_stateless(tmp_path / "cut")
    resumed.resume(tmp_path / "cut")
    resumed.fit()
    assert_same_weights(weights(full.model), weights(resumed.model))


def sigint_on_call(owner, name, call):
    """Make `owner.name` send this process a real SIGINT (what Ctrl-C sends) on its
    `call`-th call, then carry on: the interrupt lands wherever Python is at that moment."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


RECORDED = ("epoch", "step", "complete", "train_loss", "lr", "valid_loss", "valid_mse")


@pytest.mark.parametrize(
    "where, call",
    [("step", 7), ("zero_grad", 7), ("step", "last"), ("evaluate", 2)],
    ids=["during-the-update", "after-the-update", "epochs-last-update", "during-validation"],
)
@pytest.mark.parametrize("make", [make_stateless, make_stateful])
def test_ctrl_c_anywhere_saves_a_checkpoint_that_resumes_exactly(tmp_path, make, where, call):
    """The update and its count, and an epoch's end and its schedule step, are never split
    by Ctrl-C: the resumed run ends with the weights, lr and history of the uninterrupted
    one (the schedule binds here: lr / 10 after 2 epochs without improvement). After an
    epoch's last update the checkpoint says its validation is pending."""
    config = {"epochs": 4, "lr": 0.3, "lr_decay": 10.0, "patience": 3}
    full = make(tmp_path / "full", **config)
    full.fit()
    interrupted = make(tmp_path / "cut", **config)
    owner = interrupted if where == "evaluate" else interrupted.optimizer
    sigint_on_call(owner, where, len(interrupted.loader) if call == "last" else call)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make(tmp_path / "cut", **config)
    resumed.resume(tmp_path / "cut")
    resumed.fit()
    assert_same_weights(weights(full.model), weights(resumed.model))
    assert resumed.optimizer.lr == full.optimizer.lr
    assert len({r["lr"] for r in full.history}) > 1  # the schedule did move the lr
    pick = [{k: r[k] for k in RECORDED if k in r} for r in full.history]
    assert [{k: r[k] for k in RECORDED if k in r} for r in resumed.history] == pick


@pytest.mark.parametrize(
    "extra_steps", [0, 5, "last-but-one"], ids=["at-an-epochs-end", "mid-epoch", "last-but-one"]
)
@pytest.mark.parametrize("make", [make_stateless, make_stateful])
def test_a_validation_pending_at_the_step_budget_is_still_run_on_resume(
    tmp_path, make, extra_steps
):
    """The budget ends (with an epoch, or inside one); Ctrl-C lands in the validation
    after it. The resumed run has no step left, yet does that validation: the same history
    as the whole run."""
    steps = len(make().loader)
    extra_steps = steps - 1 if extra_steps == "last-but-one" else extra_steps
    budget = steps + extra_steps
    full = make(tmp_path / "full", epochs=3, max_steps=budget)
    full.fit()
    interrupted = make(tmp_path / "cut", epochs=3, max_steps=budget)
    sigint_on_call(interrupted, "evaluate", 1 + (extra_steps > 0))
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make(tmp_path / "cut", epochs=3, max_steps=budget)
    resumed.resume(tmp_path / "cut")
    assert resumed.validation_pending and len(resumed.history) == (extra_steps > 0)
    resumed.fit()
    pick = [{k: r[k] for k in RECORDED if k in r} for r in full.history]
    assert [{k: r[k] for k in RECORDED if k in r} for r in resumed.history] == pick
    assert resumed.epoch == full.epoch == 1 and not resumed.validation_pending


def test_weights_blown_up_by_a_step_are_never_checkpointed(tmp_path):
    """A step can overflow the weights and still have had a finite loss (only the next
    step's would show it). The checkpoint kept is the last one with finite weights, and
    the error names its step."""
    trainer = make_stateless(tmp_path, checkpoint_every=1)
    original = trainer.optimizer.step
    calls = {"n": 0}

    def step_that_overflows():
        original()
        calls["n"] += 1
        if calls["n"] == 3:
            trainer.model.parameters()[0].data[0] = np.inf

    trainer.optimizer.step = step_that_overflows
    with pytest.raises(TrainingDivergedError, match="holds nan or inf after step 3") as info:
        trainer.fit()
    assert "The last good checkpoint, of step 2, is kept" in str(info.value)
    kept = make_stateless(tmp_path, checkpoint_every=1)
    kept.resume(tmp_path)
    assert kept.step == 2
    assert all(np.isfinite(v).all() for v in weights(kept.model).values())


def test_a_resume_that_is_refused_changes_nothing(tmp_path):
    make_stateful(tmp_path / "other", batch_size=4, max_steps=3).fit()
    trainer = make_stateful(tmp_path / "run", batch_size=8, max_steps=2)
    trainer.fit()
    before = (weights(trainer.model), trainer.optimizer.state_dict(), trainer.step,
              trainer.epoch, len(trainer.history), trainer.loader.state_dict())  # fmt: skip
    with pytest.raises(ValueError, match="batch_size = 4, this batcher has 8"):
        trainer.resume(tmp_path / "other")
    assert_same_weights(before[0], weights(trainer.model))
    assert json.dumps(trainer.optimizer.state_dict(), default=str) == json.dumps(
        before[1], default=str
    )
    after = (trainer.step, trainer.epoch, len(trainer.history), trainer.loader.state_dict())
    assert after == before[2:]


def test_an_extra_that_is_not_json_is_refused_before_training():
    tr.manual_seed(0)
    train, valid = sine_windows()
    topo = topologies.create("many-to-one")
    model = topo.build(topologies.ModelSpec(cell="lstm", hidden_size=8, input_size=1))
    with pytest.raises(TypeError, match="extra must be JSON-able.*int64"):
        Trainer(topo, model, TrainConfig(), train, valid, extra={"window": np.int64(8)})


def test_stateless_trainer_checks_the_data_kind():
    tr.manual_seed(0)
    topo = topologies.create("many-to-one")
    model = topo.build(topologies.ModelSpec(hidden_size=4, input_size=1))
    with pytest.raises(ValueError, match="pairs"):
        Trainer(topo, model, TrainConfig(quiet=True), np.zeros(100, np.float32))
    with pytest.raises(topologies.TopologyDataError):
        Trainer(
            topo,
            model,
            TrainConfig(quiet=True),
            (np.zeros((10, 4, 1), np.float32), np.zeros((10, 4, 2, 1), np.float32)),
        )


def test_the_curves_plot_one_point_per_epoch_after_a_resumed_partial_epoch(tmp_path):
    from tinygrad_rnn.train import plots

    first = make_stateless(tmp_path, max_steps=3)
    first.fit()
    second = make_stateless(tmp_path, epochs=2)
    second.resume(tmp_path)
    second.fit()
    epochs = [h["epoch"] for h in second.history]
    assert epochs == [1, 1, 2] and not second.history[0]["complete"]  # the partial record
    kept = plots.one_record_per_epoch(second.history)
    assert [h["epoch"] for h in kept] == [1, 2] and all(h["complete"] for h in kept)
    assert plots.curves(tmp_path / "curves.png", second.history, "mse").stat().st_size > 0


def test_a_resumed_epochs_progress_counts_from_where_it_resumed():
    import io

    from tinygrad_rnn.train.progress import Progress

    stream = io.StringIO()
    progress = Progress(50, "epoch 1/1", "samples", stream=stream, done=20)
    for _ in range(30):
        progress.update(0.5, 32)
    steps = [line.split("step ")[1].split()[0] for line in stream.getvalue().splitlines()]
    assert steps == ["25/50", "30/50", "35/50", "40/50", "45/50", "50/50"]


def test_a_resumed_run_shows_its_epochs_progress_from_the_resumed_step(tmp_path, capsys):
    make_stateless(tmp_path, max_steps=3).fit()
    capsys.readouterr()
    resumed = make_stateless(tmp_path, epochs=1, quiet=False)
    resumed.resume(tmp_path)
    resumed.fit()
    lines = [line for line in capsys.readouterr().err.splitlines() if ": step " in line]
    total = len(resumed.loader)
    assert lines[0].split("step ")[1].startswith(f"4/{total} ")
    assert lines[-1].split("step ")[1].startswith(f"{total}/{total} ")


# ---- mutation audit (s7) ---------------------------------------------------------------


def test_a_save_after_fit_takes_the_random_states_as_they_are_then(tmp_path):
    """While fitting, a checkpoint takes the random states of the last counted step; once
    fit has returned, a save (a user's, or one after more draws) must take them as they
    are. Keeping fit's snapshot past its end passed the suite: the states of a run
    continued after fit were rewound on resume."""
    from tinygrad_rnn.random import default_generator, get_rng_state

    trainer = make_stateless(tmp_path, epochs=1)
    trainer.fit()
    default_generator().random(5)  # draws after fit
    assert trainer.training_state()["rng"] == get_rng_state()
