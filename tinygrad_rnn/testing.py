"""Gradient checking against central finite differences, for users' own ops too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backend import get_array_module, get_backend
from .tensor import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """The tape's gradient and the finite-difference estimate disagree."""


# The norm of the upstream gradient gradcheck contracts the output with (see there).
UPSTREAM_NORM = 1.7


def _to_float64_leaf(value: Any) -> Tensor:
    # A Tensor stays on its backend; host data goes to the default backend.
    data = value.data if isinstance(value, Tensor) else get_backend().asarray(value)
    if data.dtype.kind == "f":
        # C order: the check perturbs the leaf through a flat view, which a transposed or
        # Fortran-ordered copy would not give (reshape would copy, every difference be 0).
        return Tensor(data.astype(np.float64, order="C"), requires_grad=True)
    return Tensor(data)  # integer ids, masks: constants


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    seed: int = 0,
) -> bool:
    """Check `fn`'s tape gradients against float64 central differences.

    Floating `inputs` are copied to float64 leaves; the others are passed as
    constants. The output is contracted with a random upstream gradient `u` of
    norm `UPSTREAM_NORM`, so one backward checks every output element:
    d<u, fn(x)>/dx[i] ~ (<u, fn(x + eps e_i)> - <u, fn(x - eps e_i)>) / (2 eps).
    Its norm is not 1, so a backward that drops its upstream gradient fails on a
    scalar output (a loss) too, where a unit `u` would be exactly +-1.
    Returns True, or raises GradcheckError naming the worst element and both values.
    """
    leaves = [_to_float64_leaf(v) for v in inputs]
    out = fn(*leaves)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor; got {type(out).__name__}")
    xp = get_array_module(out.data)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(out.shape)
    u *= UPSTREAM_NORM / max(np.linalg.norm(u), 1e-300)
    u = xp.asarray(u, dtype=out.dtype)
    out.backward(u)

    def objective() -> float:
        with no_grad():
            return float((fn(*leaves).data * u).sum())

    worst: tuple[float, str, float, float] | None = None
    for k, leaf in enumerate(leaves):
        if not leaf.requires_grad:
            continue
        analytic = leaf.grad if leaf.grad is not None else xp.zeros_like(leaf.data)
        analytic = np.asarray(analytic.get() if hasattr(analytic, "get") else analytic)
        flat = leaf.data.reshape(-1)  # a view: perturbing it perturbs the leaf
        for i in range(flat.size):
            original = flat[i].item()
            flat[i] = original + eps
            plus = objective()
            flat[i] = original - eps
            minus = objective()
            flat[i] = original
            numeric = (plus - minus) / (2 * eps)
            got = float(analytic.reshape(-1)[i])
            excess = abs(got - numeric) - (atol + rtol * abs(numeric))
            if not np.isfinite(excess) and got != numeric:  # NaN/inf must not pass
                excess = np.inf
            if excess > 0 and (worst is None or excess > worst[0]):
                where = np.unravel_index(i, leaf.shape) if leaf.ndim else ()
                worst = (excess, f"input {k} at index {tuple(int(j) for j in where)}", got, numeric)
    if worst is not None:
        _, where, got, numeric = worst
        raise GradcheckError(
            f"gradcheck failed at {where}: tape gradient {got:.10g}, "
            f"finite difference {numeric:.10g} (atol={atol}, rtol={rtol}, eps={eps})"
        )
    return True
