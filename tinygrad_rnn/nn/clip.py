"""Gradient clipping by global norm: a fixed bound (PyTorch's `clip_grad_norm_`, with a loud
NaN check), or a bound that follows the norms seen so far (`AdaptiveClip`)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..backend import get_array_module
from ..tensor import Tensor
from ..threads import PARALLEL_ELEMENTS, parallel_rows

__all__ = ["AdaptiveClip", "clip_grad_norm"]


def _unique(params: Iterable[Tensor] | Tensor) -> list[Tensor]:
    if isinstance(params, Tensor):
        params = [params]
    seen: set[int] = set()
    unique = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    return unique


def clip_grad_norm(
    params: Iterable[Tensor] | Tensor, max_norm: float, error_if_nonfinite: bool = True
) -> float:
    """Scale all gradients in place so their joint L2 norm is at most `max_norm`.

    The norm is taken over every gradient together, as if concatenated; each
    parameter counts once even if listed twice (tied weights). Every gradient is
    multiplied by min(1, max_norm / (norm + 1e-6)), as in PyTorch: a norm above
    `max_norm` is brought to it, and one within about 1e-6 under a tiny
    `max_norm` is scaled a little too. Parameters with no gradient are skipped.
    Returns the norm before clipping, as a float.

    A non-finite norm (a NaN or inf gradient) raises FloatingPointError. With
    `error_if_nonfinite=False` it is returned instead and the gradients are
    left untouched: the caller should then skip `optimizer.step()` (and zero
    the gradients) for this batch.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0; got {max_norm!r}")
    grads = [p.grad for p in _unique(params) if p.grad is not None]
    total_norm = _total_norm(grads, "clip_grad_norm", error_if_nonfinite)
    if math.isfinite(total_norm):
        _clip(grads, total_norm, max_norm)
    return total_norm


def _total_norm(grads: list, caller: str, error_if_nonfinite: bool) -> float:
    """The joint L2 norm of `grads`; a non-finite one raises unless told not to."""
    if not grads:
        return 0.0
    # One dot product per gradient, summed on its device: one host sync per backend.
    squared_norms: dict[object, list] = {}
    for g in grads:
        xp = get_array_module(g)
        squared_norms.setdefault(xp, []).append(_squared_norm(xp, g.reshape(-1)))
    total_sq = 0.0
    for xp, parts in squared_norms.items():
        total_sq += float(xp.stack(parts).astype("float64").sum())
    total_norm = math.sqrt(total_sq)  # NaN and inf pass through
    if not math.isfinite(total_norm) and error_if_nonfinite:
        raise FloatingPointError(
            f"{caller}: the total gradient norm is {total_norm} (a gradient holds NaN "
            "or inf). Lower the learning rate, or pass error_if_nonfinite=False and skip "
            "this step when the returned norm is not finite"
        )
    return total_norm


def _clip(grads: list, total_norm: float, max_norm: float) -> None:
    """Scale `grads`, whose joint norm is `total_norm`, down to `max_norm`, as PyTorch does:
    by min(1, max_norm / (total_norm + 1e-6)). With a tiny max_norm that scales a norm
    a little under it too; a factor of exactly 1 is skipped (a pass saved, same result)."""
    scale = max_norm / (total_norm + 1e-6)
    if scale < 1:
        for g in grads:
            _scale(get_array_module(g), g, scale)


class AdaptiveClip:
    """Clip each step's gradients to a percentile of the gradient norms seen so far.

    Called once a step, after backward: it records the step's joint gradient norm,
    then scales the gradients down to the `percentile`-th percentile of every norm
    recorded (this one included, linear interpolation as `numpy.percentile`), and
    to `max_norm` if that is lower. Returns the norm before clipping.

    Why: a recurrent network's gradient can jump a hundredfold in one step (its
    dynamics near an unstable region). Adam divides by a second moment that still
    remembers a thousand small steps, so a jump becomes a step many times the
    usual size, which makes the next gradient bigger still: a loss spike, from
    which a converged model takes hundreds of steps to recover. A fixed bound set
    for the first steps (the norms fall a hundredfold while training) never binds
    late; this one follows the run. It is AutoClip (Seetharaman et al., 2020,
    "AutoClip: Adaptive Gradient Clipping for Source Separation Networks").

    The history is part of a run's state: `state_dict` / `load_state_dict` carry
    it through a checkpoint, so a resumed run clips as the uninterrupted one.
    """

    def __init__(self, percentile: float, max_norm: float | None = None):
        if isinstance(percentile, bool) or not (
            isinstance(percentile, (int, float)) and 0 < percentile <= 100
        ):
            raise ValueError(f"AdaptiveClip: percentile must be in (0, 100]; got {percentile!r}")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"AdaptiveClip: max_norm must be > 0 or None; got {max_norm!r}")
        self.percentile = float(percentile)
        self.max_norm = max_norm
        self._sorted: list[float] = []  # every finite norm seen, kept in order
        self.history: list[float] = []  # the same, in step order (for checkpoints)

    def __call__(self, params: Iterable[Tensor] | Tensor, error_if_nonfinite: bool = True) -> float:
        grads = [p.grad for p in _unique(params) if p.grad is not None]
        total_norm = _total_norm(grads, "AdaptiveClip", error_if_nonfinite)
        if not math.isfinite(total_norm):
            return total_norm  # not recorded: the caller skips this step
        self.history.append(total_norm)
        bisect.insort(self._sorted, total_norm)
        limit = self.limit()
        if self.max_norm is not None:
            limit = min(limit, self.max_norm)
        # Only a norm above the bound is scaled: the bound includes this step's own norm, so
        # at percentile 100 (and on the first step) nothing moves, not even by PyTorch's 1e-6.
        if total_norm > limit:
            _clip(grads, total_norm, limit)
        return total_norm

    def limit(self) -> float:
        """The percentile of the norms recorded so far (inf before the first)."""
        norms = self._sorted
        if not norms:
            return math.inf
        # numpy.percentile's default ("linear"): between the two nearest ranks.
        rank = (len(norms) - 1) * self.percentile / 100
        low = math.floor(rank)
        high = min(low + 1, len(norms) - 1)
        return norms[low] + (norms[high] - norms[low]) * (rank - low)

    def state_dict(self) -> dict[str, Any]:
        return {"history": np.asarray(self.history, dtype=np.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [float(v) for v in np.asarray(state["history"]).reshape(-1)]
        self._sorted = sorted(self.history)


def _squared_norm(xp, flat):
    """flat . flat; a large NumPy one in blocks over the library's threads, their partial
    sums added in block order (the same bits for the same thread count)."""
    if xp is not np:
        return xp.dot(flat, flat)
    parts: dict[int, float] = {}

    def block(lo: int, hi: int) -> None:
        part = flat[lo:hi]
        parts[lo] = np.dot(part, part)

    parallel_rows(np, flat.size, block, min_rows=PARALLEL_ELEMENTS)
    return np.sum([parts[lo] for lo in sorted(parts)], dtype=np.float64)


def _scale(xp, g, scale: float) -> None:
    """g *= scale in place; a large contiguous NumPy one in blocks over the threads."""
    if xp is not np or not g.flags.c_contiguous:
        g *= scale
        return
    flat = g.reshape(-1)

    def block(lo: int, hi: int) -> None:
        np.multiply(flat[lo:hi], scale, out=flat[lo:hi])

    parallel_rows(np, flat.size, block, min_rows=PARALLEL_ELEMENTS)
