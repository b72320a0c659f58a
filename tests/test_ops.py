"""Property tests: every op's tape gradient matches float64 central differences.

One hypothesis test per op. Inputs are host NumPy arrays handed to
`gradcheck`, which moves them to the backend under test, so the same tests
run on NumPy and CuPy. Shapes stay tiny (at most 4 per axis): a gradient
check costs two forward passes per input element. Elements are bounded and
kept away from the points where an op has no derivative (relu and clip
kinks, ties of max, log near 0).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_host
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_rnn as tr
from tinygrad_rnn.testing import gradcheck

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

MAX_SIDE = 4


# ---- strategies --------------------------------------------------------------
def floats_between(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, width=64)


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1) -> st.SearchStrategy:
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=MAX_SIDE
    )


def float_arrays(shape, low: float = -2.0, high: float = 2.0) -> st.SearchStrategy:
    return hnp.arrays(np.float64, shape, elements=floats_between(low, high))


def away_from_zero(shape, low: float = 0.2, high: float = 2.0) -> st.SearchStrategy:
    """Elements with low <= |x| <= high, either sign."""
    magnitude = float_arrays(shape, low, high)
    sign = hnp.arrays(np.bool_, shape)
    return st.tuples(magnitude, sign).map(lambda ms: np.where(ms[1], ms[0], -ms[0]))


def distinct_arrays(shape) -> st.SearchStrategy:
    """Elements on a 0.1 grid, all different: no ties, and far apart next to eps."""
    grid = st.integers(-40, 40).map(lambda i: i / 10)
    return hnp.arrays(np.float64, shape, elements=grid, unique=True)


@st.composite
def broadcast_pair(draw, low: float = -2.0, high: float = 2.0, denominator: bool = False):
    """Two arrays whose shapes broadcast, size-1 and missing axes included."""
    shape_a, shape_b = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=MAX_SIDE)
    ).input_shapes
    a = draw(float_arrays(shape_a, low, high))
    b = draw(away_from_zero(shape_b, 0.5, 2.0) if denominator else float_arrays(shape_b))
    return a, b


@st.composite
def array_and_axis(draw, array_strategy=float_arrays, min_dims: int = 1):
    """An array and an `axis=` argument: None, one axis (maybe negative), or a tuple."""
    shape = draw(shapes(min_dims=min_dims))
    x = draw(array_strategy(shape))
    ndim = len(shape)
    axis = draw(
        st.one_of(
            st.none(),
            st.integers(-ndim, ndim - 1),
            st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
        )
    )
    return x, axis


def check(fn, *inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4) -> None:
    assert gradcheck(fn, list(inputs), eps=eps, atol=atol, rtol=rtol)


# ---- arithmetic ----------------------------------------------------------------
@settings(deadline=None)
@given(broadcast_pair())
def test_add_gradient_sums_over_broadcast_axes(pair):
    check(lambda a, b: a + b, *pair)


@settings(deadline=None)
@given(broadcast_pair())
def test_sub_gradient_sums_over_broadcast_axes(pair):
    check(lambda a, b: a - b, *pair)


@settings(deadline=None)
@given(broadcast_pair())
def test_mul_gradient_sums_over_broadcast_axes(pair):
    check(lambda a, b: a * b, *pair)


@settings(deadline=None)
@given(broadcast_pair(denominator=True))
def test_div_gradient_sums_over_broadcast_axes(pair):
    check(lambda a, b: a / b, *pair)


@settings(deadline=None)
@given(shapes().flatmap(float_arrays), floats_between(-3, 3))
def test_binary_ops_with_a_scalar_on_either_side(x, scalar):
    check(lambda t: (scalar + t) * (t - scalar) + (scalar * t - t / 1.5 + 2.0 / (3 + t)), x)


@settings(deadline=None)
@given(shapes().flatmap(float_arrays))
def test_neg_gradient(x):
    check(lambda t: -t, x)


@settings(deadline=None)
@given(
    shapes().flatmap(lambda s: float_arrays(s, 0.5, 2.0)),
    st.sampled_from([2, 3, 0, 1, -1, 0.5, -1.5, 2.5]),
)
def test_pow_gradient_with_scalar_exponent(x, exponent):
    check(lambda t: t**exponent, x)


# ---- matmul ----------------------------------------------------------------------
@st.composite
def matmul_operands(draw):
    """Operands for every matmul case: 1-D on either side, 2-D, and batched
    with broadcast batch axes (B, 1, N, K) @ (C, K, M)."""
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    batch_a, batch_b = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)
    ).input_shapes
    a_is_vector, b_is_vector = draw(st.booleans()), draw(st.booleans())
    shape_a = (k,) if a_is_vector else (*batch_a, n, k)
    shape_b = (k,) if b_is_vector else (*batch_b, k, m)
    return draw(float_arrays(shape_a)), draw(float_arrays(shape_b))


@settings(deadline=None)
@given(matmul_operands())
def test_matmul_gradient_including_vectors_and_broadcast_batches(operands):
    a, b = operands
    check(lambda x, y: x @ y, a, b)
    assert (tr.tensor(a) @ tr.tensor(b)).shape == np.matmul(a, b).shape


# ---- reductions ----------------------------------------------------------------
@settings(deadline=None)
@given(array_and_axis(), st.booleans())
def test_sum_gradient(x_axis, keepdims):
    x, axis = x_axis
    check(lambda t: t.sum(axis=axis, keepdims=keepdims), x)


@settings(deadline=None)
@given(array_and_axis(), st.booleans())
def test_mean_gradient(x_axis, keepdims):
    x, axis = x_axis
    check(lambda t: tr.mean(t, axis=axis, keepdims=keepdims), x)


@settings(deadline=None)
@given(array_and_axis(distinct_arrays), st.booleans())
def test_max_gradient_without_ties(x_axis, keepdims):
    x, axis = x_axis
    check(lambda t: t.max(axis=axis, keepdims=keepdims), x)


# ---- shape -----------------------------------------------------------------------
@st.composite
def array_and_new_shape(draw):
    shape = draw(shapes())
    size = int(np.prod(shape))
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    d = draw(st.sampled_from(divisors))
    new_shape = draw(st.sampled_from([(size,), (-1,), (d, size // d), (size // d, 1, d), (-1, d)]))
    return draw(float_arrays(shape)), new_shape


@settings(deadline=None)
@given(array_and_new_shape())
def test_reshape_gradient(x_shape):
    x, new_shape = x_shape
    check(lambda t: t.reshape(new_shape) * 1.5, x)


@st.composite
def array_and_permutation(draw):
    shape = draw(shapes(min_dims=0, max_dims=4, min_side=1).filter(lambda s: np.prod(s) <= 48))
    axes = draw(st.one_of(st.just(None), st.permutations(range(len(shape))).map(tuple)))
    return draw(float_arrays(shape)), axes


@settings(deadline=None)
@given(array_and_permutation())
def test_transpose_and_permute_gradient(x_axes):
    x, axes = x_axes
    if axes is None:
        check(lambda t: tr.transpose(t), x)
    else:
        check(lambda t: t.permute(*axes), x)
        check(lambda t: t.transpose(tuple(a - len(axes) for a in axes)), x)


@settings(deadline=None)
@given(shapes(min_dims=1).flatmap(lambda s: st.tuples(float_arrays(s), hnp.basic_indices(s))))
def test_getitem_gradient_with_slices_ints_none_ellipsis(x_index):
    x, index = x_index
    check(lambda t: t[index], x)


@settings(deadline=None)
@given(
    shapes(min_dims=1).flatmap(
        lambda s: st.tuples(
            float_arrays(s), hnp.integer_array_indices(s, result_shape=shapes(1, 2))
        )
    )
)
def test_getitem_gradient_with_integer_arrays_sums_repeats(x_index):
    x, index = x_index
    check(lambda t: t[index], x)


@settings(deadline=None)
@given(shapes(min_dims=1).flatmap(lambda s: st.tuples(float_arrays(s), hnp.arrays(np.bool_, s))))
def test_getitem_gradient_with_boolean_mask(x_mask):
    x, mask = x_mask
    check(lambda t, m: t[m], x, mask)


@settings(deadline=None)
@given(
    shapes(min_dims=2, max_dims=3).flatmap(
        lambda s: st.tuples(
            float_arrays(s), st.lists(st.integers(0, s[0] - 1), min_size=1, max_size=5)
        )
    )
)
def test_getitem_gradient_mixing_integer_list_and_slice(x_rows):
    x, rows = x_rows
    check(lambda t: t[rows, 1:], x)


@st.composite
def concatenable(draw, same_shape: bool = False):
    """1-3 arrays equal in every axis but `axis` (or in all axes, for stack)."""
    base = list(draw(shapes(min_dims=1)))
    axis = draw(st.integers(-len(base), len(base) - 1))
    count = draw(st.integers(1, 3))
    arrays = []
    for _ in range(count):
        shape = list(base)
        if not same_shape:
            shape[axis] = draw(st.integers(1, 3))
        arrays.append(draw(float_arrays(tuple(shape))))
    return arrays, axis


@settings(deadline=None)
@given(concatenable())
def test_concatenate_gradient(arrays_axis):
    arrays, axis = arrays_axis
    check(lambda *ts: tr.concatenate(ts, axis=axis), *arrays)


@settings(deadline=None)
@given(concatenable(same_shape=True), st.booleans())
def test_stack_gradient(arrays_axis, new_axis_last):
    arrays, _ = arrays_axis
    axis = -1 if new_axis_last else 0
    check(lambda *ts: tr.stack(ts, axis=axis), *arrays)


@st.composite
def array_and_split(draw):
    shape = list(draw(shapes(min_dims=1)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    sections = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    how = draw(st.sampled_from([sections, cuts]))
    return draw(float_arrays(tuple(shape))), how, axis


@settings(deadline=None)
@given(array_and_split())
def test_split_gradient_of_all_pieces(x_split):
    x, how, axis = x_split
    pieces = tr.split(tr.tensor(x), how, axis=axis)
    expected = np.split(x, how, axis=axis)
    assert [p.shape for p in pieces] == [e.shape for e in expected]

    def weighted_pieces(t):
        # Every piece flows into the output, each with its own weight.
        return tr.concatenate(
            [p * (k + 1) for k, p in enumerate(t.split(how, axis=axis))], axis=axis
        )

    check(weighted_pieces, x)


# ---- elementwise -----------------------------------------------------------------
@settings(deadline=None)
@given(shapes().flatmap(float_arrays))
def test_exp_gradient(x):
    check(tr.exp, x)


@settings(deadline=None)
@given(shapes().flatmap(lambda s: float_arrays(s, 0.2, 3.0)))
def test_log_gradient(x):
    check(lambda t: t.log(), x)


@settings(deadline=None)
@given(shapes().flatmap(lambda s: float_arrays(s, -3, 3)))
def test_tanh_gradient(x):
    check(tr.tanh, x)


@settings(deadline=None)
@given(shapes().flatmap(lambda s: float_arrays(s, -4, 4)))
def test_sigmoid_gradient(x):
    check(lambda t: t.sigmoid(), x)


@settings(deadline=None)
@given(shapes().flatmap(away_from_zero))
def test_relu_gradient_away_from_the_kink(x):
    check(tr.relu, x)


@settings(deadline=None)
@given(
    shapes().flatmap(lambda s: distinct_arrays(s)),
    st.sampled_from([(-0.55, 0.55), (None, 0.35), (-1.05, None), (-9.0, 9.0)]),
)
def test_clip_gradient_away_from_the_bounds(x, bounds):
    low, high = bounds  # bounds off the 0.1 grid of x: never on a kink
    check(lambda t: t.clip(low, high), x)
    check(lambda t: tr.clip(t, min=low, max=high), x)


@settings(deadline=None)
@given(array_and_axis(lambda s: float_arrays(s, -3, 3)).filter(lambda xa: xa[1] is not None))
def test_softmax_gradient(x_axis):
    x, axis = x_axis
    axis = axis if isinstance(axis, int) else axis[0]
    check(lambda t: tr.softmax(t, axis=axis), x)


@settings(deadline=None)
@given(array_and_axis(lambda s: float_arrays(s, -3, 3)).filter(lambda xa: xa[1] is not None))
def test_log_softmax_gradient(x_axis):
    x, axis = x_axis
    axis = axis if isinstance(axis, int) else axis[0]
    check(lambda t: t.log_softmax(axis=axis), x)


@st.composite
def where_operands(draw):
    shape_c, shape_a, shape_b = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=MAX_SIDE)
    ).input_shapes
    return (
        draw(hnp.arrays(np.bool_, shape_c)),
        draw(float_arrays(shape_a)),
        draw(float_arrays(shape_b)),
    )


@settings(deadline=None)
@given(where_operands())
def test_where_gradient_with_broadcasting(operands):
    condition, a, b = operands
    check(lambda c, x, y: tr.where(c, x, y), condition, a, b)
    out = tr.where(tr.tensor(condition), tr.tensor(a), tr.tensor(b))
    np.testing.assert_allclose(to_host(out), np.where(condition, a, b), rtol=1e-6)


@settings(deadline=None)
@given(shapes().flatmap(float_arrays))
def test_astype_gradient_passes_through_a_float32_round_trip(x):
    # Linear in x, so a wide eps is exact up to float32 rounding of the values.
    check(lambda t: t.astype(np.float32).astype(np.float64) * 2, x, eps=1e-2, atol=1e-4)


# ---- the non-differentiable points, pinned by example ----------------------------
def test_max_ties_share_the_gradient_equally():
    x = tr.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    x.max(axis=1).backward(tr.tensor(np.array([1.0, 6.0])))
    np.testing.assert_allclose(to_host(tr.Tensor(x.grad)), [[0, 0.5, 0.5], [2.0, 2.0, 2.0]])


def test_getitem_repeated_indices_sum_their_gradients():
    x = tr.tensor(np.arange(4.0), requires_grad=True)
    x[np.array([0, 2, 0, 0])].sum().backward()
    np.testing.assert_allclose(to_host(tr.Tensor(x.grad)), [3.0, 0.0, 1.0, 0.0])


def test_relu_and_clip_pass_no_gradient_outside():
    x = tr.tensor(np.array([-1.0, 0.5, 2.0]), requires_grad=True)
    (x.relu() + x.clip(0.0, 1.0)).sum().backward()
    np.testing.assert_allclose(to_host(tr.Tensor(x.grad)), [0.0, 2.0, 1.0])


def test_at_the_kinks_relu_and_clip_take_torchs_choice():
    """relu passes nothing at 0; clip passes the gradient at its bounds (torch.clamp)."""
    x = tr.tensor(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), requires_grad=True)
    x.relu().sum().backward()
    np.testing.assert_array_equal(to_host(tr.Tensor(x.grad)), [0, 0, 1, 1, 1])
    x.grad = None
    x.clip(0.0, 1.0).sum().backward()
    np.testing.assert_array_equal(to_host(tr.Tensor(x.grad)), [0, 1, 1, 1, 0])


@pytest.mark.parametrize(
    "call",
    [
        lambda x: x.sum(axis=2),
        lambda x: x.mean(axis=-3),
        lambda x: x.max(axis=5),
        lambda x: x.transpose(0, 3),
        lambda x: tr.ops.concatenate([x, x], axis=2),
        lambda x: tr.ops.stack([x, x], axis=3),
    ],
)
def test_an_axis_out_of_range_raises_naming_it_and_never_wraps(call):
    x = tr.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    with pytest.raises(np.exceptions.AxisError, match="out of bounds for array of dimension"):
        call(x)


def test_list_operands_follow_numpys_promotion_and_never_upcast_a_float_tensor():
    ids = tr.tensor(np.array([1, 2, 3]))
    np.testing.assert_array_equal((ids + [0.5, 0.5, 0.5]).numpy(), [1.5, 2.5, 3.5])
    mask = tr.tensor(np.array([True, False]))
    np.testing.assert_array_equal((mask * [2, 3]).numpy(), [2, 0])
    x = tr.tensor(np.ones(2, np.float32))
    assert (x + [0.5, 1.5]).dtype == np.float32


def test_a_cast_to_integers_or_bools_passes_no_gradient():
    x = tr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for dtype in (np.int32, bool):
        assert not x.astype(dtype).requires_grad
    y = x.astype(np.float64)  # a float cast does
    (y * 2).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [2.0, 2.0, 2.0])


@st.composite
def signed_bases(draw):
    """Bases of both signs, at least one negative (the positive-only draw above cannot see
    a backward that takes |x|: for even exponents the sign of the gradient flips)."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
    magnitude = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.3, 2.0)))
    negative = draw(hnp.arrays(np.bool_, shape))
    x = np.where(negative, -magnitude, magnitude)
    x.flat[0] = -abs(x.flat[0])
    return x


@settings(deadline=None)
@given(signed_bases(), st.sampled_from([2, 3, 4, -1, -2, 0, 1]))
def test_pow_gradient_with_integer_exponents_on_negative_bases(x, exponent):
    assert gradcheck(lambda t: t**exponent, [x])
