"""Every op against PyTorch: the same float64 inputs, the same upstream
gradient; values and input gradients must agree.

PyTorch is a reference for tests only (`pip install torch`); without it this
module is skipped.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from conftest import to_host

import tinygrad_rnn as tr

torch = pytest.importorskip("torch")


def host(a) -> np.ndarray:
    """NumPy copy of a Tensor or of a raw array from either backend."""
    return to_host(a if isinstance(a, tr.Tensor) else tr.Tensor(a))


@dataclass
class Case:
    """One comparison: our function and torch's on the same input arrays."""

    name: str
    ours: Callable
    theirs: Callable
    shapes: list[tuple[int, ...]]
    # How to fill each input: "normal", "positive" (log, pow), "distinct" (max,
    # relu), "nonzero" (divisors), "ties" (max).
    fill: list[str] = field(default_factory=list)


def make_input(rng: np.random.Generator, shape: tuple[int, ...], fill: str) -> np.ndarray:
    if fill == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if fill == "distinct":  # far from ties and from relu's kink at 0
        size = int(np.prod(shape))
        return (rng.permutation(size) - size / 2 + 0.5).reshape(shape) * 0.25
    if fill == "ties":  # zeros and ones: every row has tied maxima
        return rng.integers(0, 2, shape).astype(np.float64)
    if fill == "nonzero":
        return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    return rng.standard_normal(shape)


def torch_split_concat(t, how, axis):
    pieces = torch.tensor_split(t, how, dim=axis)
    return torch.cat([p * (k + 1) for k, p in enumerate(pieces)], dim=axis)


def ours_split_concat(t, how, axis):
    return tr.concatenate([p * (k + 1) for k, p in enumerate(tr.split(t, how, axis=axis))], axis)


MASK = np.array([[True, False, True, True], [False, False, True, False], [True, True, False, True]])
ROWS = np.array([0, 2, 0, 0])

CASES = [
    Case("add_broadcast", lambda a, b: a + b, lambda a, b: a + b, [(3, 1, 4), (2, 4)]),
    Case("sub_broadcast", lambda a, b: a - b, lambda a, b: a - b, [(3, 1), (1, 4)]),
    Case("mul_broadcast", lambda a, b: a * b, lambda a, b: a * b, [(2, 3, 4), (3, 1)]),
    Case(
        "div_broadcast",
        lambda a, b: a / b,
        lambda a, b: a / b,
        [(2, 3), (3,)],
        ["normal", "nonzero"],
    ),
    Case(
        "scalars_both_sides",
        lambda a: (2.0 - a) * 3 / (4 + a * a) + 1,
        lambda a: (2.0 - a) * 3 / (4 + a * a) + 1,
        [(3, 2)],
    ),
    Case("neg", lambda a: -a, lambda a: -a, [(2, 3)]),
    Case("pow_int", lambda a: a**3, lambda a: a**3, [(2, 3)]),
    Case("pow_float", lambda a: a**-1.5, lambda a: a**-1.5, [(2, 3)], ["positive"]),
    Case("matmul_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 2)]),
    Case("matmul_vec_mat", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4, 2)]),
    Case("matmul_mat_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4,)]),
    Case("matmul_vec_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4,)]),
    Case("matmul_batched", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (2, 4, 2)]),
    Case(
        "matmul_broadcast_batch",
        lambda a, b: tr.matmul(a, b),
        torch.matmul,
        [(2, 1, 3, 4), (3, 4, 2)],
    ),
    Case("matmul_batched_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4,)]),
    Case("sum_all", lambda a: a.sum(), lambda a: a.sum(), [(2, 3, 4)]),
    Case(
        "sum_axis_keepdims",
        lambda a: a.sum(axis=1, keepdims=True),
        lambda a: a.sum(dim=1, keepdim=True),
        [(2, 3, 4)],
    ),
    Case("sum_axes", lambda a: tr.sum(a, axis=(0, -1)), lambda a: a.sum(dim=(0, -1)), [(2, 3, 4)]),
    Case(
        "mean_axes",
        lambda a: a.mean(axis=(0, 2), keepdims=True),
        lambda a: a.mean(dim=(0, 2), keepdim=True),
        [(2, 3, 4)],
    ),
    Case("max_axis", lambda a: a.max(axis=1), lambda a: a.amax(dim=1), [(2, 3, 4)], ["distinct"]),
    Case(
        "max_all_keepdims",
        lambda a: tr.max(a, keepdims=True),
        lambda a: a.amax(dim=(0, 1), keepdim=True),
        [(3, 4)],
        ["distinct"],
    ),
    # Tied maxima share the gradient equally, as torch.amax does.
    Case("max_ties", lambda a: a.max(axis=1), lambda a: a.amax(dim=1), [(3, 4)], ["ties"]),
    Case("max_ties_all", lambda a: a.max(), lambda a: a.amax(), [(3, 4)], ["ties"]),
    Case("reshape", lambda a: a.reshape(4, -1) * 2, lambda a: a.reshape(4, -1) * 2, [(2, 3, 2)]),
    Case("transpose_all", lambda a: a.T, lambda a: a.permute(2, 1, 0), [(2, 3, 4)]),
    Case("permute", lambda a: a.permute(1, 2, 0), lambda a: a.permute(1, 2, 0), [(2, 3, 4)]),
    Case("getitem_slices", lambda a: a[1:, ::-2], lambda a: a[1:].flip(1)[:, ::2], [(3, 4)]),
    Case("getitem_int", lambda a: a[1, :, -1], lambda a: a[1, :, -1], [(2, 3, 4)]),
    Case("getitem_repeated_rows", lambda a: a[ROWS], lambda a: a[torch.as_tensor(ROWS)], [(3, 4)]),
    Case(
        "getitem_rows_and_slice",
        lambda a: a[ROWS, 1:],
        lambda a: a[torch.as_tensor(ROWS), 1:],
        [(3, 4)],
    ),
    Case("getitem_mask", lambda a: a[MASK], lambda a: a[torch.as_tensor(MASK)], [(3, 4)]),
    Case(
        "concatenate",
        lambda a, b, c: tr.concatenate([a, b, c], axis=1),
        lambda a, b, c: torch.cat([a, b, c], dim=1),
        [(2, 1, 3), (2, 2, 3), (2, 3, 3)],
    ),
    Case(
        "stack",
        lambda a, b: tr.stack([a, b], axis=-1),
        lambda a, b: torch.stack([a, b], dim=-1),
        [(2, 3), (2, 3)],
    ),
    Case(
        "split_sections",
        lambda a: ours_split_concat(a, 3, -1),
        lambda a: torch_split_concat(a, 3, -1),
        [(2, 6)],
    ),
    Case(
        "split_indices",
        lambda a: ours_split_concat(a, [1, 3], 0),
        lambda a: torch_split_concat(a, [1, 3], 0),
        [(4, 2)],
    ),
    Case("exp", tr.exp, torch.exp, [(2, 3)]),
    Case("log", tr.log, torch.log, [(2, 3)], ["positive"]),
    Case("tanh", tr.tanh, torch.tanh, [(2, 3)]),
    Case("sigmoid", tr.sigmoid, torch.sigmoid, [(2, 3)]),
    Case("relu", tr.relu, torch.relu, [(3, 4)], ["distinct"]),
    Case("clip", lambda a: a.clip(-0.3, 0.6), lambda a: a.clamp(-0.3, 0.6), [(3, 4)], ["distinct"]),
    Case(
        "clip_min_only",
        lambda a: tr.clip(a, min=0.1),
        lambda a: a.clamp(min=0.1),
        [(3, 4)],
        ["distinct"],
    ),
    Case(
        "softmax", lambda a: tr.softmax(a, axis=1), lambda a: torch.softmax(a, dim=1), [(2, 3, 4)]
    ),
    Case(
        "log_softmax",
        lambda a: a.log_softmax(),
        lambda a: torch.log_softmax(a, dim=-1),
        [(2, 3, 4)],
    ),
    Case("where_broadcast", tr.where, torch.where, [(3, 1), (1, 4), (4,)]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_value_and_gradients_match_pytorch(case: Case):
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))  # same inputs every run
    fills = case.fill + ["normal"] * (len(case.shapes) - len(case.fill))
    inputs = [make_input(rng, s, f) for s, f in zip(case.shapes, fills)]
    if case.name.startswith("where"):
        # The condition is data, not a differentiable input: compare it outside.
        condition = inputs[0] > 0
        ours_fn = lambda a, b: case.ours(tr.tensor(condition), a, b)  # noqa: E731
        theirs_fn = lambda a, b: case.theirs(torch.as_tensor(condition), a, b)  # noqa: E731
        inputs = inputs[1:]
    else:
        ours_fn, theirs_fn = case.ours, case.theirs

    ours_in = [tr.tensor(x, requires_grad=True) for x in inputs]
    theirs_in = [torch.tensor(x, requires_grad=True) for x in inputs]
    ours_out = ours_fn(*ours_in)
    theirs_out = theirs_fn(*theirs_in)
    np.testing.assert_allclose(host(ours_out), theirs_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert ours_out.dtype == np.float64

    upstream = rng.standard_normal(theirs_out.shape)
    ours_out.backward(tr.tensor(upstream))
    theirs_out.backward(torch.as_tensor(upstream))
    for k, (mine, ref) in enumerate(zip(ours_in, theirs_in)):
        assert mine.grad is not None, f"input {k} got no gradient"
        np.testing.assert_allclose(
            host(mine.grad), ref.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"input {k}"
        )
        assert mine.grad.dtype == np.float64
