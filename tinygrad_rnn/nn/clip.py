"""Gradient clipping by global norm (PyTorch's `clip_grad_norm_`, with a loud NaN check)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..backend import get_array_module
from ..tensor import Tensor
from ..threads import PARALLEL_ELEMENTS, parallel_rows

__all__ = ["clip_grad_norm"]


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
    parameter counts once even if listed twice (tied weights). When the norm
    exceeds `max_norm`, every gradient is multiplied by max_norm / (norm + 1e-6),
    as in PyTorch. Parameters with no gradient are skipped. Returns the norm
    before clipping, as a float.

    A non-finite norm (a NaN or inf gradient) raises FloatingPointError. With
    `error_if_nonfinite=False` it is returned instead and the gradients are
    left untouched: the caller should then skip `optimizer.step()` (and zero
    the gradients) for this batch.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0; got {max_norm!r}")
    grads = [p.grad for p in _unique(params) if p.grad is not None]
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
    if not math.isfinite(total_norm):
        if error_if_nonfinite:
            raise FloatingPointError(
                f"clip_grad_norm: the total gradient norm is {total_norm} (a gradient holds NaN "
                "or inf). Lower the learning rate, or pass error_if_nonfinite=False and skip "
                "this step when the returned norm is not finite"
            )
        return total_norm
    if total_norm > max_norm:
        scale = max_norm / (total_norm + 1e-6)
        for g in grads:
            _scale(get_array_module(g), g, scale)
    return total_norm


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
