"""The Trainer: one loop per hidden-state policy, validation, schedules, checkpoints.

- stateless topologies read shuffled (X, Y) samples through a DataLoader and
  start every batch from a zero state;
- stateful topologies read a StatefulBatcher stream in time order and carry
  the state from batch to batch, detached, resetting it where an epoch starts.

Validation runs after each epoch with a state of its own, so it never touches
the training carry. Checkpoints hold everything needed to continue exactly
where the run stopped, mid-epoch included.

With a `communicator` of more than one rank the same loops run data-parallel
(see `train.distributed`): each rank reads its shard, gradients and the loss
are averaged over ranks every step before clipping, every rank validates on the
whole validation set (rank 0's numbers drive the schedule), and only rank 0
prints and writes files. Without one, or with one rank, nothing changes.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topologies import detach_state

from .. import checkpoint as ckpt
from .. import optim
from ..backend import get_array_module, get_backend, to_host
from ..data import DataLoader, StatefulBatcher, check_not_shuffled
from ..nn import AdaptiveClip, clip_grad_norm
from ..random import default_generator, get_rng_state, set_rng_state
from ..tensor import Tensor, no_grad
from ..threads import blas_threads, get_num_threads
from . import distributed
from .progress import Progress

__all__ = [
    "TrainConfig", "Trainer", "TrainingDivergedError", "CheckpointWriteError",
    "write_json_atomic",
]  # fmt: skip

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.json"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, folder gone); says what is kept."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass
class TrainConfig:
    """Everything that shapes a training run. JSON-able; stored in checkpoints."""

    epochs: int = 1
    batch_size: int = 32
    time_size: int = 35  # truncation length of a stateful stream
    eval_batch_size: int | None = None  # default: batch_size
    eval_time_size: int | None = None  # default: time_size
    optimizer: str = "adam"  # sgd | momentum | adagrad | rmsprop | adam
    lr: float = 1e-3
    momentum: float = 0.9
    clip: float | None = None  # max gradient norm
    clip_percentile: float | None = None  # AutoClip: clip each step to this percentile of
    # the gradient norms seen so far (`clip`, if set, stays an upper bound)
    shuffle: bool | None = None  # None: by policy (stateless yes, stateful never); True on
    # a stateful topology is an error
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    lr_decay: float | None = None  # divide lr by this when validation stops improving
    patience: int | None = None  # early stopping: epochs without improvement
    checkpoint_every: int | None = None  # steps; also at each epoch end and on Ctrl-C
    quiet: bool = False

    def __post_init__(self) -> None:
        # Each field's own check, so a bad value fails here, naming it, and never becomes a
        # run that trains wrongly or a checkpoint that cannot be resumed (lr_decay=nan did).
        for name in ("epochs", "batch_size", "time_size"):
            _check_int(self, name, low=1)
        for name in ("eval_batch_size", "eval_time_size", "max_steps", "checkpoint_every"):
            _check_int(self, name, low=1, optional=True)
        _check_int(self, "patience", low=0, optional=True)
        _check_int(self, "seed", low=None)
        _check_number(self, "lr", lambda v: v > 0, "> 0")
        _check_number(self, "momentum", lambda v: 0 <= v < 1, "in [0, 1)")
        _check_number(self, "clip", lambda v: v > 0, "> 0", optional=True)
        _check_number(
            self, "clip_percentile", lambda v: 0 < v <= 100, "in (0, 100]", optional=True
        )
        _check_number(
            self, "lr_decay", lambda v: v > 1, "> 1 (lr is divided by it)", optional=True
        )


def _check_int(config: TrainConfig, name: str, low: int | None, optional: bool = False) -> None:
    value = getattr(config, name)
    if optional and value is None:
        return
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or (low is not None and number < low):
        bound = "an integer" if low is None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {bound}{' or None' if optional else ''}; got {value!r}")


def _check_number(
    config: TrainConfig, name: str, accept: Callable[[float], bool], bound: str,
    optional: bool = False,
) -> None:  # fmt: skip
    value = getattr(config, name)
    if optional and value is None:
        return
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    if not (is_number and math.isfinite(value) and accept(value)):
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")


class _InterruptGate:
    """Ctrl-C during `fit`: raised at once, except inside a `held()` block, which finishes
    first, so what a checkpoint saved on Ctrl-C holds is never half an update or half an
    epoch's end. Its SIGINT handler is installed once a fit, in the main thread and only
    over Python's default one; elsewhere no signal arrives and blocks run as they are.
    (Holding a block costs two flag writes, not a handler swap per training step.)"""

    def __init__(self) -> None:
        self.holding = False
        self.pending = False

    def __call__(self, signum: int, frame: Any) -> None:
        if not self.holding:
            raise KeyboardInterrupt
        self.pending = True

    @contextmanager
    def installed(self) -> Iterator[None]:
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        ):
            yield
            return
        signal.signal(signal.SIGINT, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    @contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:  # reached only when the block ended normally
            self.pending = False
            raise KeyboardInterrupt


def make_optimizer(name: str, params: list, config: TrainConfig) -> Any:
    """The optimizer `name` over `params`, with the config's learning rate."""
    makers = {
        "sgd": lambda: optim.SGD(params, lr=config.lr),
        "momentum": lambda: optim.SGD(params, lr=config.lr, momentum=config.momentum),
        "adagrad": lambda: optim.AdaGrad(params, lr=config.lr),
        "rmsprop": lambda: optim.RMSprop(params, lr=config.lr),
        "adam": lambda: optim.Adam(params, lr=config.lr),
    }
    if name not in makers:
        raise ValueError(f"optimizer must be one of {sorted(makers)}; got {name!r}")
    return makers[name]()


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON whole or not at all (`checkpoint.write_atomically`): readers never see
    half a file, and a failed write leaves no temp file behind."""
    text = json.dumps(payload, indent=2, default=_json_default).encode()
    ckpt.write_atomically(path, lambda file: file.write(text))


def _layer_generators(model: Any) -> list[np.random.Generator]:
    """The generators a model's layers draw from (dropout masks), other than the
    library's: passed to `build`, they go into checkpoints beside the library's."""
    found: dict[int, np.random.Generator] = {}
    for module in model.modules():
        generator = getattr(module, "generator", None)
        if isinstance(generator, np.random.Generator):
            found.setdefault(id(generator), generator)
    return list(found.values())


def _training_counters(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint's counters and records, checked and converted; a bad one
    is a CheckpointError naming the key, the expected and the received value."""

    def bad(key: str, expected: str) -> ckpt.CheckpointError:
        return ckpt.checkpoint_error(path, f"{key!r} must be {expected}; got {state.get(key)!r}")

    def count(key: str, default: int | None = None) -> int:
        value = state.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(key, "an integer >= 0")
        return value

    def number(key: str, default: float | None = None, optional: bool = False) -> float | None:
        value = state.get(key, default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(key, "a number" + (" or null" if optional else ""))
        return float(value)

    def flag(key: str, default: bool | None = None) -> bool:
        value = state.get(key, default)
        if not isinstance(value, bool):
            raise bad(key, "true or false")
        return value

    def records(key: str, kind: type, default: list | None = None) -> list:
        value = state.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
            raise bad(key, f"a list of {'records' if kind is dict else 'numbers'}")
        return list(value)

    # Checkpoints from before the epoch's sums and the pending flag were kept: the epoch's
    # loss restarts at the resume, and an epoch whose batches were all trained was
    # validated before it was saved.
    return {
        "epoch": count("epoch"),
        "step": count("step"),
        "best": number("best", optional=True),
        "bad_epochs": count("bad_epochs"),
        "stopped_early": flag("stopped_early"),
        "history": records("history", dict),
        "step_losses": records("step_losses", (int, float), []),
        "epoch_loss_sum": number("epoch_loss_sum", 0.0),
        "epoch_count": count("epoch_count", 0),
        "validation_pending": flag("validation_pending", False),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _flatten_state(state: Any) -> list[Any]:
    if state is None:
        return []
    return [state] if isinstance(state, Tensor) else list(state)


class Trainer:
    """Fit a topology's model on training data; validate, checkpoint, log.

    Args:
        topology: a Topology instance (its `stateful` flag picks the loop).
        model: the Module that `topology.build` made.
        config: a TrainConfig.
        train: (X, Y) arrays for a stateless topology; one stream array
            (token ids (L,) or a series (L, F)) for a stateful one.
        valid: the same kind of data, for the per-epoch validation (optional).
        out_dir: where `checkpoint.npz` and `metrics.json` go (None: nowhere).
        extra: JSON-able facts to store in every checkpoint and in metrics.json
            (recipe, model spec, vocabulary...), so evaluate/generate can
            rebuild the model from the checkpoint alone.
        optimizer: defaults to `config.optimizer` over the model's parameters.
        communicator: an `MPICommunicator` (or None) for data-parallel training;
            then `config.batch_size` is the batch per rank, every rank must be
            given the same model, config, data and out_dir, and the model's
            parameters start as rank 0's.
    """

    def __init__(
        self,
        topology: Any,
        model: Any,
        config: TrainConfig,
        train: Any,
        valid: Any = None,
        out_dir: str | os.PathLike | None = None,
        extra: dict[str, Any] | None = None,
        optimizer: Any = None,
        communicator: Any = None,
    ):
        self.topology = topology
        self.model = model
        self.config = config
        self.stateful = bool(topology.stateful)
        if self.stateful:
            check_not_shuffled(
                bool(config.shuffle), f"a Trainer for the stateful topology {topology.name!r}"
            )
            if any(getattr(m, "bidirectional", False) for m in model.modules()):
                raise ValueError(
                    f"the stateful topology {topology.name!r} carries the state across batches, "
                    "which a bidirectional layer cannot continue; use bidirectional=False"
                )
            self._check_stream(train, "train")
            if valid is not None:
                self._check_stream(valid, "valid")
        else:
            self._check_pairs(train, "train")
            if valid is not None:
                self._check_pairs(valid, "valid")
        self.train_data = train
        self.valid_data = valid
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.extra = dict(extra or {})
        try:  # it goes into every checkpoint: refused now, not at the first save
            json.dumps(self.extra)
        except (TypeError, ValueError) as err:
            raise TypeError(f"extra must be JSON-able, as checkpoints store it: {err}") from None
        self.optimizer = optimizer or make_optimizer(config.optimizer, model.parameters(), config)
        self.clipper = None  # AutoClip, when asked for; it keeps the norms' history
        if config.clip_percentile is not None:
            self.clipper = AdaptiveClip(config.clip_percentile, config.clip)
        # What each step does to the gradients before the update: AutoClip, a fixed-norm
        # clip, or nothing.
        self._clip: Callable[[list[Tensor]], Any] | None = self.clipper
        if self.clipper is None and config.clip is not None:
            self._clip = functools.partial(clip_grad_norm, max_norm=config.clip)
        # One rank is the single-process trainer, unchanged.
        self.comm = communicator if communicator is not None and communicator.size > 1 else None
        self.rank = 0 if self.comm is None else self.comm.rank
        self._allreduce = None
        if self.comm is not None:
            distributed.seed_rank_generator(config.seed, self.rank)
            distributed.broadcast_parameters(model.parameters(), self.comm)
            self._allreduce = distributed.GradientAllreduce(model.parameters(), self.comm)
        # Both splits are batched now, so a split too short for its batches is refused
        # before any training, not after the first epoch's steps (which would be lost).
        self.loader = self._split_batches("train", self._make_train_loader)
        if valid is not None:
            self._split_batches("valid", lambda: self._eval_batches(valid))
        self.history: list[dict[str, Any]] = []
        # The random states as of the last counted step, while fitting (None otherwise):
        # a step's forward draws its dropout masks before the step counts, so a Ctrl-C
        # in between must save the states from before those draws, or the resumed run
        # redoes the step with other masks.
        self._rng_at_step: tuple[dict, list[dict]] | None = None
        self._generators = _layer_generators(model)  # found once: not per step
        self._resumed = False  # set by resume(): metrics.json then keeps its test block
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.carried: Any = None  # the stateful carry, detached
        self.batch_in_epoch = 0  # batches of the current epoch already trained on
        self.epoch_loss_sum = 0.0  # the current epoch's training loss, summed over its count
        self.epoch_count = 0
        # The epoch's last batch is trained, its validation and schedule step not yet done
        # (a checkpoint saved then, on Ctrl-C, makes the resumed run do them first).
        self.validation_pending = False
        self._saved_step: int | None = None  # the step of the checkpoint this run last wrote
        self._interrupts = _InterruptGate()
        self.step_losses: list[float] = []  # every step's training loss, for diagnostics
        self.best: float | None = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.throughput: float | None = None

    # ---- data --------------------------------------------------------------------
    def _check_stream(self, data: Any, name: str) -> None:
        if isinstance(data, tuple):
            raise ValueError(
                f"{name}: the stateful topology {self.topology.name!r} reads one stream "
                "(token ids (L,) or a series (L, F)), not (X, Y) pairs"
            )

    def _check_pairs(self, data: Any, name: str) -> None:
        if not (isinstance(data, tuple) and len(data) == 2):
            raise ValueError(
                f"{name}: the stateless topology {self.topology.name!r} reads (X, Y) pairs; "
                f"got {type(data).__name__}"
            )
        self.topology.check_data(np.asarray(data[0]), np.asarray(data[1]))

    def _make_train_loader(self) -> Any:
        c = self.config
        if self.comm is not None:
            return distributed.make_train_loader(
                self.stateful, self.train_data, c, self.rank, self.comm.size
            )
        if self.stateful:
            return StatefulBatcher(self.train_data, c.batch_size, c.time_size)
        X, Y = self.train_data
        shuffle = True if c.shuffle is None else c.shuffle
        return DataLoader(X, Y, c.batch_size, shuffle=shuffle, seed=c.seed + 1)

    def _split_batches(self, split: str, make: Callable[[], Any]) -> Any:
        """`make()`, the batches of one split; a ValueError names the split and the sizes."""
        try:
            return make()
        except ValueError as err:
            c = self.config
            sizes = f"batch_size={c.batch_size}"
            if split != "train":
                sizes = f"eval_batch_size={c.eval_batch_size or c.batch_size}"
            if self.stateful:
                time_size = c.time_size if split == "train" else c.eval_time_size or c.time_size
                sizes += f", time_size={time_size}"
            raise ValueError(f"{split} split ({sizes}): {err}") from None

    def _eval_batches(self, data: Any, batch_size: int | None = None) -> Any:
        c = self.config
        if self.stateful:
            return StatefulBatcher(
                data,
                batch_size or c.eval_batch_size or c.batch_size,
                c.eval_time_size or c.time_size,
            )
        X, Y = data
        return DataLoader(X, Y, batch_size or c.eval_batch_size or c.batch_size, shuffle=False)

    # ---- evaluation --------------------------------------------------------------
    def evaluate(self, data: Any, batch_size: int | None = None) -> dict[str, float]:
        """Mean loss and the topology's metrics over `data`, with a fresh state.

        Stateful data is read as one stateful pass (the textbook's perplexity);
        the training carry is left alone.
        """
        modes = [(m, m.training) for m in self.model.modules()]  # each module's own
        self.model.eval()
        total_loss = 0.0
        total_count = 0
        sums: dict[str, list[float]] = {}
        state = None
        try:
            with no_grad():
                for inputs, targets in self._eval_batches(data, batch_size):
                    out = self.topology.loss(self.model, inputs, targets, state)
                    state = out.state if self.stateful else None
                    total_loss += float(out.loss.item()) * out.count
                    total_count += out.count
                    for name, (value, n) in self.topology.batch_metrics(
                        self.model, inputs, targets, out
                    ).items():
                        acc = sums.setdefault(name, [0.0, 0.0])
                        acc[0] += float(value)
                        acc[1] += n
        finally:
            for module, mode in modes:
                object.__setattr__(module, "training", mode)
        mean_loss = total_loss / max(total_count, 1)
        result = {"loss": mean_loss}
        if self.model_head_kind() == "regression":
            result["mse"] = mean_loss
        elif self.stateful:
            result["perplexity"] = float(math.exp(min(mean_loss, 700.0)))
        for name, (value, n) in sums.items():
            result[name] = value / max(n, 1)
        return result

    def model_head_kind(self) -> str:
        head = getattr(self.model, "head", None)
        return getattr(head, "kind", "regression")

    @property
    def monitor(self) -> str:
        """The validation metric the schedule watches (lower is better)."""
        if self.model_head_kind() == "regression":
            return "mse"
        return "perplexity" if self.stateful else "loss"

    # ---- training ----------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train for `config.epochs` epochs (or `max_steps` steps); returns the history.

        Ctrl-C saves a checkpoint, then re-raises KeyboardInterrupt.
        """
        c = self.config
        self._mark_rng()
        try:
            with self._interrupts.installed():
                # A pending validation is the end of an epoch already trained: it runs even
                # when the step budget is spent.
                while self.validation_pending or (
                    self.epoch < c.epochs and not self._budget_spent() and not self.stopped_early
                ):
                    self._run_epoch()
        except KeyboardInterrupt:
            if self.comm is not None:  # ranks stop at different points: no collective save
                self.comm.abort(f"rank {self.rank} interrupted; the last checkpoint is kept", 130)
            try:  # a second Ctrl-C waits for this save: a half-written one would be lost
                with self._interrupts.installed(), self._interrupts.held():
                    self.save_checkpoint()
            except TrainingDivergedError as err:  # the weights are not worth keeping
                print(f"not saved on interrupt: {err}", file=sys.stderr)
            except KeyboardInterrupt:
                pass  # the second Ctrl-C, held until the save was done: raised below
            raise
        except TrainingDivergedError:
            raise  # decided on the global loss: every rank raises it at the same step
        except Exception as err:
            if self.comm is not None:  # the other ranks would wait for this one forever
                traceback.print_exc()
                self.comm.abort(f"rank {self.rank} failed: {type(err).__name__}: {err}")
            raise
        finally:
            self._rng_at_step = None  # outside fit, a save takes the states as they are
        self.write_metrics()
        return self.history

    def _mark_rng(self) -> None:
        """Remember the random states now, where the counted steps end (see __init__)."""
        self._rng_at_step = self._live_rng_states()

    def _live_rng_states(self) -> tuple[dict, list[dict]]:
        """(library generator state, layer generators' states), as they are now."""
        return get_rng_state(), [g.bit_generator.state for g in self._generators]

    def _budget_spent(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def _run_epoch(self) -> None:
        c = self.config
        loader = self.loader
        unit = getattr(self.topology, "count_unit", "samples")
        params = self.model.parameters()
        if self.validation_pending:  # resumed after the epoch's last batch: validate it now
            batches: Any = iter(())
        else:
            # Whole: iter() draws a new epoch's order, which a checkpoint must not pair
            # with the last epoch's position.
            with self._interrupts.held():
                batches = iter(loader)  # sets the epoch up now: fresh, or the resumed position
                self.batch_in_epoch = loader.state_dict()["next_batch"]
                if self.batch_in_epoch == 0:
                    self.epoch_loss_sum, self.epoch_count = 0.0, 0
        progress = Progress(
            len(loader), f"epoch {self.epoch + 1}/{c.epochs}", unit, c.quiet or self.rank != 0,
            done=self.batch_in_epoch,
        )  # fmt: skip
        trained = 0  # this call's samples (or tokens), for the throughput
        started = time.perf_counter()
        self.model.train()
        try:
            for inputs, targets in batches:
                if self.stateful and loader.epoch_start(self.batch_in_epoch):
                    self.carried = None
                out = self.topology.loss(self.model, inputs, targets, self.carried)
                loss_value = float(out.loss.item())
                count = out.count
                if self._allreduce is None:
                    self._check_finite(loss_value)
                out.loss.backward()
                if self._allreduce is not None:
                    # The global mean loss travels with the gradients: one message a step.
                    loss_value, count = self._allreduce(
                        loss_value, count, f"the gradient allreduce of step {self.step + 1}"
                    )
                    self._check_finite(loss_value)
                # The update and its bookkeeping, whole: a checkpoint saved on Ctrl-C holds
                # either the step and its count or neither, so the resume is exact.
                with self._interrupts.held():
                    if self._clip is not None:
                        self._clip(params)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                    if self.stateful:
                        self.carried = detach_state(out.state)
                    self.step += 1
                    self.batch_in_epoch += 1
                    # Its last batch trained (or the step budget spent), an epoch awaits its
                    # validation: a checkpoint from now until that is done says so.
                    self.validation_pending = (
                        self.batch_in_epoch >= len(loader) or self._budget_spent()
                    )
                    self.step_losses.append(loss_value)
                    self.epoch_loss_sum += loss_value * count
                    self.epoch_count += count
                    self._mark_rng()
                trained += count
                progress.update(loss_value, count)
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.save_checkpoint()
                if self._budget_spent():
                    break
        finally:
            progress.close()
        seconds = time.perf_counter() - started
        finished_epoch = self.batch_in_epoch >= len(loader)
        self.throughput = trained / max(seconds, 1e-9) if trained else self.throughput
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "complete": finished_epoch,
            "train_loss": self.epoch_loss_sum / max(self.epoch_count, 1),
            "lr": float(self.optimizer.lr),
            "seconds": seconds,
            "throughput": self.throughput,
            "throughput_unit": f"{unit}/s",
        }
        valid = None
        if self.valid_data is not None:  # may take a while: Ctrl-C here keeps it pending
            valid = self.evaluate(self.valid_data)
            if self.comm is not None:  # equal replicas, equal numbers; rank 0's decide, to be sure
                valid = self.comm.broadcast_object(valid, "the validation metrics")
            record.update({f"valid_{k}": v for k, v in valid.items()})
            if not math.isfinite(valid[self.monitor]):  # never saved as this epoch's end
                raise self._diverged(
                    f"validation {self.monitor} became {valid[self.monitor]} after step "
                    f"{self.step}"
                )
        # The epoch's end, whole: its schedule step, count and record go in together.
        with self._interrupts.held():
            if finished_epoch:  # a partial epoch (max_steps) must not move the schedule
                if valid is not None:
                    self._schedule(valid[self.monitor])
                self.epoch += 1
            self.validation_pending = False
            self.history.append(record)
            self._mark_rng()
        progress.log(
            " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in record.items()
                if k in ("epoch", "step", "train_loss", "lr", "throughput")
                or k.startswith("valid_")
            )
        )
        self.save_checkpoint()
        self.write_metrics()

    def _check_finite_weights(self) -> None:
        for name, p in self.model.named_parameters():
            if not bool(get_array_module(p.data).isfinite(p.data).all()):
                raise self._diverged(f"parameter {name!r} holds nan or inf after step "
                                     f"{self.step}")  # fmt: skip

    def _check_finite(self, loss_value: float) -> None:
        if not math.isfinite(loss_value):
            raise self._diverged(f"the loss became {loss_value} at step {self.step + 1}")

    def _diverged(self, what: str) -> TrainingDivergedError:
        """The error that stops a diverged run: what happened, and what it leaves on disk."""
        if self.out_dir is None:
            kept = "No checkpoint is written (no out_dir)."
        elif self._saved_step is not None:
            kept = (f"The last good checkpoint, of step {self._saved_step}, is kept in "
                    f"{self.out_dir / CHECKPOINT_NAME}.")  # fmt: skip
        elif (self.out_dir / CHECKPOINT_NAME).exists():
            kept = f"The last good checkpoint is kept in {self.out_dir / CHECKPOINT_NAME}."
        else:
            kept = f"No checkpoint had been written yet to {self.out_dir / CHECKPOINT_NAME}."
        return TrainingDivergedError(
            f"{what} (epoch {self.epoch + 1}); training stopped. {kept} Try a smaller lr or a "
            "gradient clip."
        )

    def _schedule(self, value: float) -> None:
        """Divide lr by `lr_decay` when validation stops improving; maybe stop early."""
        c = self.config
        if self.best is None or value < self.best:
            self.best = value
            self.bad_epochs = 0
            return
        self.bad_epochs += 1
        if c.lr_decay:
            self.optimizer.lr = self.optimizer.lr / c.lr_decay
        if c.patience is not None and self.bad_epochs >= c.patience:
            self.stopped_early = True

    # ---- persistence -------------------------------------------------------------
    def _rng_states(self) -> tuple[dict, list[dict]]:
        """(library generator state, layer generators' states) for a checkpoint."""
        return self._rng_at_step if self._rng_at_step is not None else self._live_rng_states()

    def training_state(self) -> dict[str, Any]:
        """The JSON-able part of a checkpoint (the arrays go beside it)."""
        rng, generators = self._rng_states()
        return {
            "kind": "tinygrad-rnn-training",
            "config": asdict(self.config),
            "topology": {"name": self.topology.name, "options": self.topology.config},
            "epoch": self.epoch,
            "step": self.step,
            "loader": {**self.loader.state_dict(), "next_batch": self.batch_in_epoch},
            "rng": rng,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "lr": float(self.optimizer.lr),
            "history": self.history,
            "step_losses": self.step_losses,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_count": self.epoch_count,
            "validation_pending": self.validation_pending,
            "carried_state": len(_flatten_state(self.carried)),
            # JSON-safe (an MT19937 state holds an array; set back, a list is taken as one)
            "generators": [
                json.loads(json.dumps(state, default=_json_default)) for state in generators
            ],
            **self.extra,
        }

    def save_checkpoint(self) -> Path | None:
        """Write `checkpoint.npz` atomically (nothing when out_dir is None).

        Weights that are no longer finite are never written over the last good
        checkpoint: TrainingDivergedError instead. (A step can blow the weights up and
        still report a finite loss; only the next step's loss would show it.)
        """
        if self.out_dir is None:
            return None
        self._check_finite_weights()
        carried = [to_host(s) for s in _flatten_state(self.carried)]
        extra = {}
        if self.comm is not None:
            # Rank 0 writes the global carry (the lane groups joined) and every rank's RNG.
            gathered = distributed.gather_rank_states(
                self.comm, carried, self._rng_states()[0],
                distributed.state_batch_axis(self.topology),
                f"the checkpoint gather of step {self.step}",
            )
            if gathered is None:
                return None
            carried, rng_states = gathered
            extra["distributed"] = {"world_size": self.comm.size, "rng": rng_states}
        extra = {**self.training_state(), **extra}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / CHECKPOINT_NAME
        arrays = {f"carried_{i}": a for i, a in enumerate(carried)}
        if self.clipper is not None:
            arrays["clip_history"] = self.clipper.state_dict()["history"]
        try:
            ckpt.save(path, self.model, self.optimizer, extra=extra, arrays=arrays)
        except OSError as err:  # a full disk, a folder gone: say what is still there
            kept = (f"the checkpoint of step {self._saved_step} is kept"
                    if self._saved_step is not None and path.exists()
                    else "the file there is as it was" if path.exists()
                    else "no checkpoint is there")  # fmt: skip
            raise CheckpointWriteError(
                err.errno, f"could not write the checkpoint of step {self.step} to {path} "
                f"({err.strerror or err}); {kept}"
            ) from err
        self._saved_step = self.step
        return path

    def resume(self, path: str | os.PathLike) -> None:
        """Continue from a checkpoint file, or a run directory's latest checkpoint.

        Everything is checked before anything changes: a checkpoint of another kind, rank
        count or data layout raises, leaving the model, optimizer and position as they were.
        """
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT_NAME
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint to resume at {path}")
        state = ckpt.read_extra(path)
        arrays = ckpt.load_arrays(path)
        if state.get("kind") != "tinygrad-rnn-training":
            raise ValueError(f"{path} is a model checkpoint, not a training checkpoint")
        saved = state.get("distributed")
        saved_ranks = 1 if saved is None else int(saved["world_size"])
        ranks = 1 if self.comm is None else self.comm.size
        if saved_ranks != ranks:
            raise ValueError(
                f"{path} was written by a run over {saved_ranks} rank(s); resume it with "
                f"{saved_ranks} (mpirun -n {saved_ranks} ... --distributed), not {ranks}"
            )
        loader_state = state.get("loader")
        if not isinstance(loader_state, dict) or not isinstance(state.get("carried_state"), int):
            raise ckpt.checkpoint_error(
                path, "a training checkpoint needs its 'loader' position and 'carried_state' "
                f"count; got {loader_state!r:.60} and {state.get('carried_state')!r}"
            )
        missing = [f"carried_{i}" for i in range(state["carried_state"])
                   if f"carried_{i}" not in arrays]  # fmt: skip
        if missing:
            raise ckpt.checkpoint_error(path, f"misses the arrays {missing}")
        if self.comm is not None:
            loader_state = distributed.rank_loader_state(loader_state, self.loader)
        carried = [arrays[f"carried_{i}"] for i in range(int(state["carried_state"]))]
        if carried and self.comm is not None:  # this rank's lane group of the global carry
            carried = distributed.rank_slice(
                carried, self.rank, self.comm.size, distributed.state_batch_axis(self.topology)
            )
        generators = self._generators
        saved_generators = state.get("generators")  # absent: written before they were kept
        if saved_generators is not None and len(saved_generators) != len(generators):
            raise ValueError(
                f"{path} holds the states of {len(saved_generators)} layer generator(s); this "
                f"model's layers draw from {len(generators)}"
            )
        clip_history = None
        if self.clipper is not None and "clip_history" in arrays:
            clip_history = np.asarray(arrays["clip_history"], dtype=np.float64).reshape(-1)
        counters = _training_counters(path, state)
        # Each saved generator state is tried on a scratch generator of its kind first.
        rng_state = state["rng"] if saved is None else saved["rng"][self.rank]
        for generator, saved_state in [(default_generator(), rng_state),
                                       *zip(generators, saved_generators or [])]:  # fmt: skip
            try:
                type(generator.bit_generator)().state = saved_state
            except (TypeError, ValueError, KeyError) as err:
                raise ckpt.checkpoint_error(
                    path, f"a generator state does not fit a "
                    f"{type(generator.bit_generator).__name__} ({err})"
                ) from None
        # The loader checks its whole state before taking it; the model and optimizer are
        # checked whole by ckpt.load. Should that refuse, the loader goes back.
        position = self.loader.state_dict()
        self.loader.load_state_dict(loader_state)
        try:
            ckpt.load(path, self.model, self.optimizer, require_finite=True)
        except Exception:
            self.loader.load_state_dict(position)
            raise
        for name, value in counters.items():  # (the lr came back with the optimizer's state)
            setattr(self, name, value)
        self.batch_in_epoch = int(loader_state["next_batch"])
        self._resumed = True
        set_rng_state(rng_state)
        for generator, saved_state in zip(generators, saved_generators or []):
            generator.bit_generator.state = saved_state
        if clip_history is not None:
            self.clipper.load_state_dict({"history": clip_history})
        if carried:
            target = get_backend(self.model.parameters()[0].backend)
            tensors = [Tensor(target.asarray(a)) for a in carried]
            self.carried = tensors[0] if len(tensors) == 1 else tuple(tensors)
        else:
            self.carried = None

    def write_metrics(self, test: dict[str, float] | None = None) -> None:
        """Rewrite metrics.json: config, history so far, test metrics, throughput."""
        if self.out_dir is None or self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / METRICS_NAME
        previous: dict[str, Any] = {}
        if path.exists():
            try:
                previous = json.loads(path.read_text())
            except (OSError, ValueError):
                previous = {}
        payload = {
            "config": {"train": asdict(self.config), **self.extra},
            "history": self.history,
            # Another run's results in this folder are not this run's: only a resumed
            # run keeps the test block it wrote before.
            "test": test if test is not None
            else previous.get("test", {}) if self._resumed else {},
            "throughput": self.throughput,
            # Float32 sums round differently on another thread count: say which ran.
            "threads": {"library": get_num_threads(), "blas": blas_threads()},
            "steps": self.step,
            "step_losses": self.step_losses,
        }
        write_json_atomic(path, payload)

