"""The tensor and its tape: recording, backward, accumulation, detach, no_grad,
dtype rules, the released-graph error, and that graphs free their memory."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from conftest import to_host

import tinygrad_rnn as tr
from tinygrad_rnn.tensor import GraphReleasedError, TapeEntry, record


def host(a) -> np.ndarray:
    """NumPy copy of a Tensor or of a raw array (a `.grad`) from either backend."""
    return to_host(a if isinstance(a, tr.Tensor) else tr.Tensor(a))


def leaf(values, dtype=np.float64) -> tr.Tensor:
    return tr.tensor(np.asarray(values, dtype=dtype), requires_grad=True)


@pytest.fixture
def gc_disabled():
    """Run with the cycle collector off: what dies here dies by reference counts."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---- facts about a tensor ----------------------------------------------------------
def test_shape_dtype_ndim_item_numpy():
    t = tr.tensor([[1.0, 2.0, 3.0]])
    assert t.shape == (1, 3) and t.ndim == 2 and t.size == 3 and len(t) == 1
    assert t.dtype == np.float32
    host_copy = t.numpy()
    assert type(host_copy) is np.ndarray
    np.testing.assert_array_equal(host_copy, [[1, 2, 3]])
    assert tr.tensor(2.5).item() == 2.5 and isinstance(tr.tensor(2.5).item(), float)
    assert "requires_grad=True" in repr(leaf([1.0]))


# ---- dtype rules -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1.0, 2.0], np.float32),
        ([1, 2], np.float32),
        (1.5, np.float32),
        (np.zeros(2, np.float64), np.float64),
        (np.zeros(2, np.float32), np.float32),
        (np.arange(3), np.arange(3).dtype),
        (np.arange(3, dtype=np.int32), np.int32),
        (np.zeros(2, bool), np.bool_),
    ],
)
def test_tensor_keeps_array_dtypes_and_makes_python_data_float32(data, expected):
    assert tr.tensor(data).dtype == expected


def test_tensor_dtype_on_request():
    assert tr.tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert tr.tensor(np.zeros(2, np.float32), dtype="float64").dtype == np.float64


def test_requires_grad_needs_a_float_dtype():
    with pytest.raises(TypeError, match="floating dtype"):
        tr.tensor(np.arange(3), requires_grad=True)


BINARY_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("op", sorted(BINARY_OPS))
@pytest.mark.parametrize("scalar", [2, 2.5, True, np.float64(2.5), np.float32(2.5), np.int64(2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalars_on_either_side_keep_the_tensor_dtype(op, scalar, dtype):
    fn = BINARY_OPS[op]
    for left_scalar in (False, True):
        x = leaf([1.0, 2.0, 4.0], dtype)
        y = fn(scalar, x) if left_scalar else fn(x, scalar)
        assert y.dtype == dtype, f"{op} with {scalar!r} on the {'left' if left_scalar else 'right'}"
        y.sum().backward()
        assert x.grad.dtype == dtype


@pytest.mark.parametrize("exponent", [2, 0.5, -1, np.float64(1.5)])
def test_pow_with_a_scalar_exponent_keeps_float32(exponent):
    x = leaf([1.0, 2.0], np.float32)
    y = x**exponent
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_where_with_scalars_keeps_float32():
    x = leaf([1.0, -2.0], np.float32)
    condition = tr.tensor(np.array([True, False]))
    assert tr.where(condition, x, 0.0).dtype == np.float32
    assert tr.where(condition, 1.5, x).dtype == np.float32
    assert tr.where([True, False], x, 2).dtype == np.float32  # a Python list as condition


def test_gradient_takes_the_dtype_of_the_input_it_belongs_to():
    x = leaf([1.0, 2.0], np.float32)
    y = x * tr.tensor(np.array([3.0, 4.0]))  # float64 constant: the product is float64
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(host(x.grad), [3.0, 4.0])


def test_upstream_gradient_is_cast_to_the_output_dtype():
    x = leaf([1.0, 2.0], np.float32)
    (x * 2).backward(tr.tensor(np.array([1.0, 1.0])))  # float64 upstream
    assert x.grad.dtype == np.float32


def test_ndarray_on_the_left_defers_to_the_tensor():
    x = leaf([1.0, 2.0])
    host_array = np.array([3.0, 4.0])
    if x.backend == "numpy":
        y = host_array * x
        assert isinstance(y, tr.Tensor)
        y.sum().backward()
        np.testing.assert_allclose(host(x.grad), host_array)


# ---- the tape ------------------------------------------------------------------------
def test_each_op_appends_one_entry_in_execution_order():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    w = leaf([[0.5], [-1.0]])
    h = (x @ w).tanh()
    loss = (h * h).sum() + x.mean()
    tape = loss.tape()
    assert [e.op for e in tape] == ["matmul", "tanh", "mul", "sum", "mean", "add"]
    assert all(isinstance(e, TapeEntry) for e in tape)
    assert [e.seq for e in tape] == sorted(e.seq for e in tape)


def test_ops_on_constants_record_nothing():
    x = tr.tensor(np.array([1.0, 2.0]))
    y = (x * 2).exp().sum()
    assert not y.requires_grad and y.is_leaf and y.tape() == []
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_records_nothing_and_enable_grad_turns_it_back_on():
    x = leaf([1.0, 2.0])
    with tr.no_grad():
        assert not tr.is_grad_enabled()
        y = x * 3
        with tr.enable_grad():
            z = x * 3
    assert tr.is_grad_enabled()
    assert not y.requires_grad and y.tape() == []
    assert z.requires_grad and [e.op for e in z.tape()] == ["mul"]


def test_no_grad_is_restored_after_an_exception():
    with pytest.raises(ZeroDivisionError), tr.no_grad():
        1 / 0  # noqa: B018
    assert tr.is_grad_enabled()


def test_detach_shares_data_and_cuts_the_graph():
    x = leaf([1.0, 2.0, 3.0])
    d = x.detach()
    assert not d.requires_grad and d.is_leaf and d.data is x.data
    (x * d).sum().backward()  # d acts as a constant
    np.testing.assert_allclose(host(x.grad), [1.0, 2.0, 3.0])


# ---- backward -------------------------------------------------------------------------
def test_backward_of_a_scalar_defaults_to_one():
    x = leaf([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(host(x.grad), [2.0, -4.0, 6.0])


def test_backward_needs_a_gradient_for_non_scalars():
    x = leaf([1.0, 2.0])
    with pytest.raises(ValueError, match="scalar"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        (x * 2).backward(tr.tensor(np.ones(3)))


def test_backward_with_an_explicit_gradient():
    x = leaf([1.0, 2.0])
    (x * 3).backward(tr.tensor(np.array([1.0, 10.0])))
    np.testing.assert_allclose(host(x.grad), [3.0, 30.0])


def test_a_node_used_twice_gets_the_sum_of_its_gradients():
    x = leaf([1.0, 2.0])
    a = x * 3  # used three times below
    (a * a + a).sum().backward()
    # d/dx (9x^2 + 3x) = 18x + 3
    np.testing.assert_allclose(host(x.grad), [21.0, 39.0])


def test_diamond_graph_sums_both_paths():
    x = leaf([0.5, -1.0])
    shared = x.exp()
    (shared.tanh() + shared * 2).sum().backward()
    e = np.exp([0.5, -1.0])
    np.testing.assert_allclose(host(x.grad), (1 - np.tanh(e) ** 2) * e + 2 * e)


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 2).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(host(x.grad), [4.0, 6.0])


def test_leaves_never_share_a_gradient_array():
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (x + w).sum().backward()
    assert x.grad is not w.grad
    x.grad += 1  # an optimizer updates in place; the other leaf must not see it
    np.testing.assert_allclose(host(w.grad), [1.0, 1.0])


def test_backward_on_a_leaf_copies_the_given_gradient():
    x = leaf([1.0, 2.0])
    upstream = tr.tensor(np.array([5.0, 6.0]))
    x.backward(upstream)
    x.grad += 1
    np.testing.assert_allclose(host(upstream), [5.0, 6.0])


def test_constant_inputs_get_no_gradient():
    x = leaf([1.0, 2.0])
    c = tr.tensor(np.array([3.0, 4.0]))
    (x * c + c).sum().backward()
    assert c.grad is None


def test_custom_op_with_record():
    def square(t):
        return record("square", (t,), t.data * t.data, lambda g: (2 * t.data * g,))

    x = leaf([3.0, -1.0])
    y = square(x)
    assert [e.op for e in y.tape()] == ["square"]
    y.sum().backward()
    np.testing.assert_allclose(host(x.grad), [6.0, -2.0])


def test_custom_op_with_a_wrong_gradient_shape_is_named():
    x = leaf([1.0, 2.0])
    y = record("broken", (x,), x.data * 2, lambda g: (g.sum(),))
    with pytest.raises(RuntimeError, match=r"'broken'.*shape \(\)"):
        y.sum().backward()


def test_custom_op_returning_too_few_gradients_is_named():
    x, w = leaf([1.0]), leaf([2.0])
    y = record("short", (x, w), x.data * w.data, lambda g: (g,))
    with pytest.raises(RuntimeError, match="'short'.*1 gradients for 2 inputs"):
        y.sum().backward()


# ---- released graphs -------------------------------------------------------------------
def test_second_backward_over_a_released_graph_raises():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(GraphReleasedError, match="released.*detach"):
        loss.backward()
    assert tr.GraphReleasedError is GraphReleasedError


def test_backward_through_a_shared_released_subgraph_raises_before_touching_grads():
    x = leaf([1.0, 2.0])
    shared = x.exp()
    first, second = shared.sum(), (shared * 2).sum()
    first.backward()
    grad_after_first = host(x.grad)
    with pytest.raises(GraphReleasedError, match="'exp'"):
        second.backward()
    np.testing.assert_array_equal(host(x.grad), grad_after_first)


def test_carried_state_must_be_detached_between_batches():
    w = leaf([0.5, 0.5])
    state = tr.tensor(np.zeros(2))
    for step in range(3):
        state = (state + w).tanh()
        state.sum().backward()
        if step == 0:
            with pytest.raises(GraphReleasedError):
                (state + w).tanh().sum().backward()
        state = state.detach()  # the fix: carry values, not the graph


def test_backward_releases_the_entries_it_used():
    x = leaf([1.0, 2.0])
    loss = (x.exp() * 2).sum()
    tape = loss.tape()
    loss.backward()
    assert all(e.released and e.inputs == () and e.backward_fn is None for e in tape)
    assert "released" in repr(tape[0])


# ---- memory ------------------------------------------------------------------------------
def test_backward_frees_intermediates_even_while_the_loss_is_kept(gc_disabled):
    x = leaf(np.ones((64, 64)))
    hidden = (x * 2).tanh()
    hidden_ref, entry_ref = weakref.ref(hidden), weakref.ref(hidden._entry)
    loss = hidden.sum()
    del hidden
    assert hidden_ref() is not None  # the loss's graph still holds it
    loss.backward()
    assert hidden_ref() is None and entry_ref() is None
    assert loss.requires_grad  # the loss itself is still usable as a value


def test_a_graph_never_backwarded_dies_with_its_last_tensor(gc_disabled):
    x = leaf(np.ones((64, 64)))
    out = ((x @ x).tanh() * 3).sum()
    refs = [weakref.ref(e) for e in out.tape()]
    big = out.tape()[0]  # the matmul entry holds the (64, 64) inputs
    big_ref = weakref.ref(big)
    del big
    assert all(r() is not None for r in refs)
    del out
    # Dead by reference counts alone (the collector is off): the graph has no cycles.
    assert big_ref() is None and all(r() is None for r in refs)


def test_no_op_leaves_a_reference_cycle(gc_disabled):
    x, w = leaf(np.ones((3, 4))), leaf(np.ones((4, 2)))
    hidden = ((x @ w).softmax() - 1.0) ** 2 / 3.0
    pieces = tr.split(hidden.T.reshape(3, 2), 2, axis=1)
    out = tr.stack([tr.concatenate(pieces, axis=0).log_softmax(axis=0)[[0, 0, 1]].sigmoid()])
    out = tr.where(tr.tensor(np.ones(out.shape, bool)), out.relu().clip(0.0, 1.0), -out.exp())
    out = out.max(axis=0).mean() + x[:, 1:].sum()
    tape = out.tape()
    refs = [weakref.ref(e) for e in tape] + [weakref.ref(t) for e in tape for t in e.inputs]
    del tape, hidden, pieces, out
    # Dead by reference counts alone: none of the ops closed a cycle.
    assert [r() for r in refs if r() is not None and r() not in (x, w)] == []


def test_training_loop_with_detach_keeps_the_tape_bounded():
    w = leaf(np.full((2, 2), 0.1))
    state = tr.tensor(np.ones((1, 2)))
    lengths = []
    for _ in range(20):
        state = (state @ w).tanh()
        loss = (state * state).sum()
        lengths.append(len(loss.tape()))
        loss.backward()
        state = state.detach()
    assert set(lengths) == {lengths[0]}


def test_tensor_of_an_array_shares_it_and_of_a_tensor_detaches():
    """As documented on `tr.tensor`: no copy of an array already in place; a Tensor
    argument gives a leaf over the same data, cut from the graph."""
    x = tr.tensor([1.0, 2.0], requires_grad=True)
    doubled = x * 2
    leaf = tr.tensor(doubled)
    assert not leaf.requires_grad and leaf.data is doubled.data
    array = tr.tensor(np.zeros(3, dtype=np.float32)).data  # on the default backend
    shared = tr.tensor(array)
    array[0] = 5
    assert float(shared.data[0]) == 5
