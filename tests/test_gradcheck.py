"""gradcheck: float64 central differences under a random unit-norm upstream
gradient; a wrong backward is caught and the worst element reported."""

from __future__ import annotations

import re

import numpy as np
import pytest

import tinygrad_rnn as tr
from tinygrad_rnn.backend import get_array_module
from tinygrad_rnn.tensor import record
from tinygrad_rnn.testing import UPSTREAM_NORM, GradcheckError, gradcheck


def cube_with_backward(backward_of_x):
    """A custom op x -> x**3 whose backward is `backward_of_x(x_data, g)`."""

    def cube(x: tr.Tensor) -> tr.Tensor:
        x_data = x.data
        return record("cube", (x,), x_data**3, lambda g: (backward_of_x(x_data, g),))

    return cube


def test_a_correct_op_passes():
    x = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    assert gradcheck(cube_with_backward(lambda x, g: 3 * x**2 * g), [x]) is True


@pytest.mark.parametrize(
    "layout", [lambda x: x.T, np.asfortranarray, lambda x: tr.tensor(x).T],
    ids=["transposed", "fortran", "transposed-tensor"],
)
def test_any_memory_layout_is_checked_as_c_order_would_be(layout):
    """A non-C-contiguous input must still be perturbed: once, every difference was 0,
    so a zero backward passed and a correct one failed."""
    x = layout(np.linspace(-1.0, 1.0, 6).reshape(3, 2))
    assert gradcheck(cube_with_backward(lambda x, g: 3 * x**2 * g), [x]) is True
    with pytest.raises(GradcheckError):
        gradcheck(cube_with_backward(lambda x, g: 0 * g), [x])


def test_a_wrong_op_fails_naming_the_worst_element_and_both_values():
    def wrong_at_one_element(x, g):
        right = 3 * x**2 * g
        err = get_array_module(x).zeros_like(x)
        err[1, 2] = 0.5  # the worst error
        err[0, 0] = 0.01
        return right + err

    x = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    with pytest.raises(GradcheckError) as caught:
        gradcheck(cube_with_backward(wrong_at_one_element), [x])
    message = str(caught.value)
    assert "input 0 at index (1, 2)" in message
    got, numeric = (float(v) for v in re.findall(r"(?:gradient|difference) ([-+0-9.e]+)", message))
    assert abs(got - numeric - 0.5) < 1e-6


def test_the_upstream_gradient_is_random_not_ones():
    # A backward that ignores its upstream gradient is right only for g == 1.
    x = np.array([0.3, -0.7, 1.1])
    with pytest.raises(GradcheckError):
        gradcheck(cube_with_backward(lambda x, g: 3 * x**2), [x])


def test_the_upstream_gradient_has_its_norm_and_inputs_become_float64():
    seen = {}

    def spy(x: tr.Tensor) -> tr.Tensor:
        seen["dtype"] = x.dtype

        def backward(g):
            seen["norm"] = float(get_array_module(g).linalg.norm(g))
            seen["spread"] = float(g.max() - g.min())
            return (g,)

        return record("spy", (x,), x.data.copy(), backward)

    gradcheck(spy, [np.ones((3, 4), np.float32)])
    assert seen["dtype"] == np.float64
    assert abs(seen["norm"] - UPSTREAM_NORM) < 1e-12 and seen["spread"] > 0


def test_a_scalar_loss_that_drops_its_upstream_gradient_fails():
    # A unit u is exactly +-1 on a 0-d output: every loss was checked with g = 1 (or -1)
    def mean_square_dropping_g(x: tr.Tensor) -> tr.Tensor:
        return record("ms", (x,), (x.data**2).mean(), lambda g: (2 * x.data / x.size,))

    with pytest.raises(GradcheckError):
        gradcheck(mean_square_dropping_g, [np.array([0.3, -0.7, 1.1])])


def test_a_nan_gradient_fails():
    x = np.array([0.5, 1.5])
    with pytest.raises(GradcheckError, match="nan"):
        gradcheck(cube_with_backward(lambda x, g: g * x * np.nan), [x])


def test_tolerances_are_used():
    slightly_off = cube_with_backward(lambda x, g: 3 * x**2 * g * (1 + 1e-3))
    x = np.array([0.5, 1.0, 1.5])
    with pytest.raises(GradcheckError, match="rtol=0.0001"):
        gradcheck(slightly_off, [x])
    assert gradcheck(slightly_off, [x], rtol=1e-2)


def test_integer_and_boolean_inputs_are_constants():
    x = np.arange(6.0).reshape(3, 2)
    rows = np.array([0, 2, 0])
    assert gradcheck(lambda t, r: t[r] * 2, [x, rows])
    mask = np.array([True, False, True])
    assert gradcheck(lambda m, t: tr.where(m, t.sum(axis=1), 0.0), [mask, x])


def test_the_callers_inputs_are_not_changed():
    x = np.array([0.25, 0.5])
    t = tr.tensor(np.array([1.0, 2.0]))
    gradcheck(lambda a, b: a * b, [x, t])
    np.testing.assert_array_equal(x, [0.25, 0.5])
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0])
    assert t.grad is None


def test_fn_must_return_a_tensor():
    with pytest.raises(TypeError, match="must return a Tensor"):
        gradcheck(lambda t: t.data, [np.ones(2)])
