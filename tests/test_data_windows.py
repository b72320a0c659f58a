"""Stateless windows and time splits: alignment, counts, dtypes, errors."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinygrad_rnn.data import sliding_windows, split_series


@settings(deadline=None)
@given(
    length=st.integers(2, 120),
    features=st.integers(1, 3),
    window=st.integers(1, 20),
    horizon=st.integers(1, 5),
    stride=st.integers(1, 7),
)
def test_windows_align_with_the_series_and_count_exactly(length, features, window, horizon, stride):
    assume(length >= window + horizon)
    series = np.arange(length * features, dtype=np.float64).reshape(length, features)
    x, y = sliding_windows(series, window, horizon, stride)
    count = (length - window - horizon) // stride + 1
    assert x.shape == (count, window, features)
    assert y.shape == (count, horizon, features)
    for i in range(count):
        start = i * stride
        np.testing.assert_array_equal(x[i], series[start : start + window])
        np.testing.assert_array_equal(y[i], series[start + window : start + window + horizon])
    # The count is maximal: one more window would run past the end.
    assert count * stride + window + horizon > length


def test_one_dimensional_series_counts_as_one_feature():
    x, y = sliding_windows(np.arange(10.0), window=3, horizon=2)
    assert x.shape == (6, 3, 1) and y.shape == (6, 2, 1)
    np.testing.assert_array_equal(x[0, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(y[0, :, 0], [3, 4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_windows_keep_the_series_dtype(dtype):
    x, y = sliding_windows(np.arange(12).astype(dtype), window=4)
    assert x.dtype == dtype and y.dtype == dtype


def test_windows_are_copies_not_views():
    series = np.arange(8.0)
    x, _ = sliding_windows(series, window=3)
    x[0, 0, 0] = -1.0
    assert series[0] == 0.0


@pytest.mark.parametrize(
    "kwargs, numbers",
    [
        (dict(window=0), ["window", "0"]),
        (dict(window=3, horizon=0), ["horizon", "0"]),
        (dict(window=3, stride=0), ["stride", "0"]),
        (dict(window=8, horizon=3), ["length 10", "8 + 3 = 11"]),
    ],
)
def test_bad_window_arguments_raise_with_the_numbers(kwargs, numbers):
    with pytest.raises(ValueError) as info:
        sliding_windows(np.arange(10.0), **kwargs)
    for number in numbers:
        assert number in str(info.value)


def test_series_must_be_one_or_two_dimensional():
    with pytest.raises(ValueError, match="shape"):
        sliding_windows(np.zeros((5, 2, 2)), window=2)


@st.composite
def fraction_lists(draw):
    weights = draw(st.lists(st.integers(1, 20), min_size=1, max_size=4))
    scale = draw(st.sampled_from([1.0, 0.9, 0.5]))
    total = sum(weights)
    return [scale * w / total for w in weights]


@settings(deadline=None)
@given(length=st.integers(0, 300), fractions=fraction_lists())
def test_splits_are_consecutive_disjoint_and_in_order(length, fractions):
    series = np.arange(length)
    pieces = split_series(series, fractions)
    assert len(pieces) == len(fractions)
    joined = np.concatenate(pieces)
    # Consecutive and in order: the pieces glue back into a prefix of the series.
    np.testing.assert_array_equal(joined, series[: len(joined)])
    for piece, fraction in zip(pieces, fractions):
        assert abs(len(piece) - length * fraction) <= 1 + 1e-6
    if abs(sum(fractions) - 1.0) < 1e-9:
        assert len(joined) == length


def test_split_then_window_never_crosses_a_split():
    series = np.arange(100.0)
    train, valid, test = split_series(series, (0.8, 0.1, 0.1))
    assert (len(train), len(valid), len(test)) == (80, 10, 10)
    x, y = sliding_windows(valid, window=4, horizon=1)
    assert x.min() >= 80 and y.max() < 90


def test_split_keeps_the_feature_axis():
    a, b = split_series(np.zeros((10, 3)), (0.5, 0.5))
    assert a.shape == (5, 3) and b.shape == (5, 3)


def test_float_rounding_of_fractions_still_covers_the_series():
    # 0.7 + 0.2 + 0.1 == 0.9999999999999999 in floating point.
    pieces = split_series(np.arange(1000), (0.7, 0.2, 0.1))
    assert [len(p) for p in pieces] == [700, 200, 100]


@pytest.mark.parametrize(
    "fractions, message",
    [
        ((0.8, 0.3), "sum"),
        ((0.5, 0.0), "positive"),
        ((0.5, -0.1), "positive"),
        ((float("nan"),), "finite"),
        ((), "empty"),
    ],
)
def test_bad_fractions_raise_clear_errors(fractions, message):
    with pytest.raises(ValueError, match=message):
        split_series(np.arange(10), fractions)
