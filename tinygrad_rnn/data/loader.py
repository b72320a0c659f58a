"""Mini-batches of independent samples, reshuffled each epoch from a private Generator."""

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._checks import as_generator, integer, integer_pair, positive_int


class DataLoader:
    """Iterate over (xb, yb) mini-batches of paired samples for one epoch per ``iter()``.

    Args:
        X: (N, ...) inputs, e.g. (N, T, F) windows.
        Y: (N, ...) targets, paired with X along the first axis.
        batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
        shuffle: draw a fresh permutation each epoch; otherwise read in order.
        drop_last: drop the last incomplete batch.
        seed: int or ``numpy.random.Generator`` for the permutations (a Generator passed in is
            used, and advanced, directly). None gives an unseeded, non-reproducible order.
            numpy's global RNG is never used.
        shard: ``(rank, world_size)`` to read only this rank's part of every epoch: each
            epoch's permutation is cut into ``world_size`` equal contiguous slices of
            ``N // world_size`` samples (the remainder is skipped that epoch) and the rank
            takes slice ``rank``. All ranks must use the same seed so they agree on the
            permutation, hence a seed is required with ``shuffle=True``.

    Each ``iter()`` starts a new epoch, except the first one after ``load_state_dict`` of a
    mid-epoch state, which finishes that epoch first. ``len()`` is batches per epoch.
    """

    def __init__(
        self,
        X: ArrayLike,
        Y: ArrayLike,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | np.random.Generator | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.X = np.asarray(X)
        self.Y = np.asarray(Y)
        if self.X.ndim == 0 or self.Y.ndim == 0:
            raise ValueError("X and Y must have a sample axis, got a scalar")
        if self.X.shape[0] != self.Y.shape[0]:
            raise ValueError(
                f"X and Y must have the same number of samples, got {self.X.shape[0]} "
                f"and {self.Y.shape[0]}"
            )
        self.batch_size = positive_int(batch_size, "batch_size")
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.shard = None if shard is None else self._check_shard(shard, self.X.shape[0])
        if self.shard is not None and self.shuffle and seed is None:
            raise ValueError(
                "shard with shuffle=True needs a seed shared by all ranks, otherwise their "
                "permutations differ and the shards overlap"
            )
        self._rng = as_generator(seed)
        self.epoch = 0  # epochs started so far
        self._order: np.ndarray | None = None  # this rank's sample indices for the epoch
        self._next = 0  # index of the next batch within the epoch
        self._resume = False

    @staticmethod
    def _check_shard(shard: tuple[int, int], n: int) -> tuple[int, int]:
        rank, world_size = integer_pair(shard, "shard", "(rank, world_size)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}"
            )
        if world_size > n:
            raise ValueError(f"shard world_size {world_size} is larger than the {n} samples")
        return rank, world_size

    @property
    def num_samples(self) -> int:
        """Samples this loader (this rank) reads per epoch, before ``drop_last``."""
        n = self.X.shape[0]
        return n if self.shard is None else n // self.shard[1]

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _new_epoch(self) -> None:
        n = self.X.shape[0]
        perm = self._rng.permutation(n) if self.shuffle else np.arange(n)
        if self.shard is not None:
            rank, world_size = self.shard
            per_rank = n // world_size
            perm = perm[rank * per_rank : (rank + 1) * per_rank]
        self._order = perm
        self._next = 0
        self.epoch += 1

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Set up the epoch now, not at the first next(), so state_dict() is current at once.
        resume = self._resume and self._order is not None and self._next < len(self)
        self._resume = False
        if not resume:
            self._new_epoch()
        return self._batches(self._order)

    def _batches(self, order: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while self._next < len(self):
            k = self._next
            # Advance before yielding so that a state_dict() taken while the caller works on
            # this batch points at the next one.
            self._next += 1
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            yield self.X[idx], self.Y[idx]

    def state_dict(self) -> dict[str, Any]:
        """Position for an exact resume: RNG state, this epoch's order, next batch index.

        Plain JSON-able values (the order is a list of ints), so it fits a checkpoint's
        metadata as is.
        """
        return {
            "rng": self._rng.bit_generator.state,
            "order": None if self._order is None else self._order.tolist(),
            "next_batch": self._next,
            "epoch": self.epoch,
            "num_samples": self.X.shape[0],
            "shard": None if self.shard is None else list(self.shard),
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``; the next ``iter()`` yields the remaining batches.

        Every field is checked before any is applied: a state for other data, another
        shard, batch size or ``drop_last`` (its batch index would point elsewhere), or
        with an order or position out of range, raises ValueError naming it and leaves
        the loader as it was. (States saved before batch_size and drop_last were kept
        are taken as this loader's.)
        """
        if integer(state["num_samples"], "state num_samples") != self.X.shape[0]:
            raise ValueError(
                f"state is for {state['num_samples']} samples, this loader has {self.X.shape[0]}"
            )
        saved_shard = state["shard"]
        if saved_shard is not None:
            saved_shard = integer_pair(saved_shard, "state shard", "(rank, world_size)")
        if saved_shard != self.shard:
            raise ValueError(f"state is for shard {saved_shard}, this loader has {self.shard}")
        for key, mine in (("batch_size", self.batch_size), ("drop_last", self.drop_last)):
            if key in state and state[key] != mine:
                raise ValueError(
                    f"state has {key} = {state[key]!r}, this loader has {mine!r}: its batch "
                    "position would point at other samples"
                )
        order = state["order"]
        if order is not None:
            order = np.asarray(order)
            n = self.X.shape[0]
            if order.shape != (self.num_samples,) or order.dtype.kind not in "iu":
                raise ValueError(
                    f"state order must be ({self.num_samples},) integers; got shape "
                    f"{order.shape}, dtype {order.dtype}"
                )
            order = order.astype(np.int64)
            if order.size and (order.min() < 0 or order.max() >= n):
                raise ValueError(f"state order holds indices outside [0, {n})")
            if np.unique(order).size != order.size:
                raise ValueError("state order repeats a sample index")
        next_batch = integer(state["next_batch"], "state next_batch", 0, len(self))
        epoch = integer(state["epoch"], "state epoch", 0)
        probe = np.random.Generator(type(self._rng.bit_generator)())
        try:
            probe.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"state rng is not a {type(probe.bit_generator).__name__} "
                             f"state: {err}") from None  # fmt: skip
        self._rng.bit_generator.state = state["rng"]
        self._order = order
        self._next = next_batch
        self.epoch = epoch
        self._resume = True
