"""Stateful truncated-BPTT batches: B lanes read one long stream in time order.

The corpus is cut into B lanes of ``jump`` steps each; batch k holds steps
``[k*T, (k+1)*T)`` of every lane, so a trainer can carry each lane's hidden state from batch
k to batch k+1 and cut the gradient at batch boundaries.
"""

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._checks import integer, integer_pair, positive_int

_SHUFFLE_REASON = (
    "a stateful stream cannot be shuffled: the hidden state carried from one batch to the "
    "next is only meaningful when every lane is read in time order"
)


def check_not_shuffled(shuffle: bool, where: str) -> None:
    """Raise ValueError with a one-line reason if ``shuffle`` is asked for a stateful stream.

    ``where`` names the caller (e.g. ``"StatefulBatcher"`` or ``"Trainer(stateful=True)"``).
    """
    if shuffle:
        raise ValueError(f"{where}: {_SHUFFLE_REASON}")


def lane_range(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The ``(start, stop)`` lanes of ``rank`` when B lanes are split evenly over ranks."""
    batch_size = positive_int(batch_size, "batch_size")
    world_size = positive_int(world_size, "world_size")
    rank = integer(rank, "rank", 0, world_size - 1)
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} does not split evenly over world_size {world_size}"
        )
    per_rank = batch_size // world_size
    return rank * per_rank, (rank + 1) * per_rank


class StatefulBatcher:
    """Truncated-BPTT batches over one long sequence, lanes read in time order.

    Args:
        data: (L,) int token ids, or a real series: (L,) float (taken as (L, 1)) or (L, F).
        batch_size: B, the number of lanes.
        time_size: T, steps per batch (the truncation length).
        shuffle: must be False; True raises ValueError (see ``check_not_shuffled``).
        lanes: ``(start, stop)`` to read only lanes ``start..stop-1`` (one data-parallel
            rank's group; see ``lane_range``). Offsets stay those of the full batcher, so the
            ranks' batches stacked in lane order equal the full batch, and batches have
            ``stop - start`` rows (``batch_size`` stays the full B). Default: all lanes.

    Lane b starts at ``offsets[b] = b * jump`` with ``jump = (L - 1) // B``. Batch k is
    ``(x, t)`` with ``x[b, j] = data[offsets[b] + k*T + j]`` and ``t[b, j] = x``'s next step,
    ``data[offsets[b] + k*T + j + 1]``: x and t are (B, T) for ids, (B, T, F) for a series.
    A lane's inputs stay inside ``[offsets[b], offsets[b] + jump)``; its last target may be the
    next lane's first input; lanes never wrap around.

    One epoch is ``len(self) = jump // T`` batches. Left over each epoch, never read as
    inputs: the last ``jump % T`` positions of every lane, and the tail ``B*jump .. L-1``
    after the last lane (``(L - 1) % B`` positions plus the final one, which has no next
    step; the tail's first position may still be the last lane's final target).

    Epoch start: batch index 0. The trainer resets the carried hidden state where
    ``epoch_start(step)`` is True (``step % len(self) == 0``, so a global step counter works).
    Iterating gives one epoch from batch 0, or from the saved batch right after
    ``load_state_dict``; ``iter_from(k)`` starts at batch k, ``batch(k)`` reads any batch.
    """

    def __init__(
        self,
        data: ArrayLike,
        batch_size: int,
        time_size: int,
        shuffle: bool = False,
        lanes: tuple[int, int] | None = None,
    ) -> None:
        check_not_shuffled(shuffle, "StatefulBatcher")
        array = np.asarray(data)
        if array.ndim == 1 and np.issubdtype(array.dtype, np.floating):
            array = array[:, None]  # a real series always has a feature axis
        if array.ndim not in (1, 2):
            raise ValueError(
                f"data must be (L,) token ids or an (L,) / (L, F) series, got shape {array.shape}"
            )
        self.data = array
        self.batch_size = positive_int(batch_size, "batch_size")
        self.time_size = positive_int(time_size, "time_size")
        length = array.shape[0]
        self.jump = (length - 1) // self.batch_size if length > 0 else 0
        if self.jump < self.time_size:
            raise ValueError(
                f"data of length {length} gives lanes of jump = ({length} - 1) // "
                f"{self.batch_size} = {self.jump} steps, fewer than time_size = "
                f"{self.time_size}: not even one batch"
            )
        if lanes is None:
            lanes = (0, self.batch_size)
        start, stop = integer_pair(lanes, "lanes", "(start, stop)")
        if not 0 <= start < stop <= self.batch_size:
            raise ValueError(
                f"lanes must be (start, stop) with 0 <= start < stop <= batch_size = "
                f"{self.batch_size}, got {tuple(lanes)}"
            )
        self.lanes = (start, stop)
        self.offsets = np.arange(start, stop, dtype=np.int64) * self.jump
        self._next = 0  # next batch index of the current epoch
        self._resume = False

    def __len__(self) -> int:
        return self.jump // self.time_size

    @property
    def num_features(self) -> int | None:
        """F for a series, None for token ids."""
        return None if self.data.ndim == 1 else self.data.shape[1]

    def epoch_start(self, step: int) -> bool:
        """True where an epoch begins: the trainer resets the carried state before this step."""
        return step % len(self) == 0

    def positions(self, step: int) -> np.ndarray:
        """(b, T) corpus positions of batch ``step``'s inputs (targets are these + 1)."""
        step = integer(step, "step")
        if not 0 <= step < len(self):
            raise IndexError(f"batch {step} is outside the epoch's {len(self)} batches")
        return self.offsets[:, None] + step * self.time_size + np.arange(self.time_size)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``step`` of the epoch as (x, t): (b, T) ids or (b, T, F) series."""
        idx = self.positions(step)
        return self.data[idx], self.data[idx + 1]

    def iter_from(self, step: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield batches ``step, step+1, ..., len(self)-1`` of the epoch."""
        self._next = integer(step, "start step", 0, len(self))
        return self._batches()

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        resume = self._resume and self._next < len(self)
        self._resume = False
        return self.iter_from(self._next if resume else 0)

    def _batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while self._next < len(self):
            k = self._next
            # Advance first so a state_dict() taken during this batch points at the next one.
            self._next += 1
            yield self.batch(k)

    def state_dict(self) -> dict[str, Any]:
        """Position in the epoch (index of the next batch) and the layout it belongs to.

        JSON-able. The carried hidden state is the trainer's to save alongside.
        """
        return {
            "next_batch": self._next,
            "length": self.data.shape[0],
            "batch_size": self.batch_size,
            "time_size": self.time_size,
            "lanes": list(self.lanes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``; the next ``iter()`` continues from the saved batch."""
        for key, mine in (
            ("length", self.data.shape[0]),
            ("batch_size", self.batch_size),
            ("time_size", self.time_size),
        ):
            if integer(state[key], f"state {key}") != mine:
                raise ValueError(f"state has {key} = {state[key]}, this batcher has {mine}")
        if integer_pair(state["lanes"], "state lanes", "(start, stop)") != self.lanes:
            raise ValueError(
                f"state has lanes = {tuple(state['lanes'])}, this batcher has {self.lanes}"
            )
        self._next = integer(state["next_batch"], "state next_batch", 0, len(self))
        self._resume = True
