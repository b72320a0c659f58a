"""Synthetic series: shapes, dtypes, determinism by seed, and the documented waveforms."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_rnn.data import (
    GENERATION_PARAMS,
    WAVE_NAMES,
    noisy_sine,
    wave,
    waveforms_classification,
    waveforms_generation,
)


def _global_state():
    state = np.random.get_state(legacy=False)
    return state["state"]["key"].copy(), state["state"]["pos"], state["has_gauss"], state["gauss"]


@settings(deadline=None)
@given(length=st.integers(1, 300), period=st.floats(2, 100), seed=st.integers(0, 2**32 - 1))
def test_noisy_sine_is_seeded_float32_around_the_clean_signal(length, period, seed):
    noisy, clean = noisy_sine(length, period, 0.1, seed, return_clean=True)
    assert noisy.shape == clean.shape == (length,)
    assert noisy.dtype == clean.dtype == np.float32
    np.testing.assert_allclose(clean, np.sin(2 * np.pi * np.arange(length) / period), atol=1e-6)
    np.testing.assert_array_equal(noisy, noisy_sine(length, period, 0.1, seed))
    assert np.max(np.abs(noisy - clean)) < 0.1 * 7  # noise of std 0.1


def test_noise_has_the_asked_std_and_depends_on_the_seed():
    noisy, clean = noisy_sine(20_000, 25, 0.3, 0, return_clean=True)
    assert abs(np.std(noisy - clean) - 0.3) < 0.01
    assert not np.array_equal(noisy, noisy_sine(20_000, 25, 0.3, 1))
    np.testing.assert_array_equal(noisy_sine(50, 25, 0.0, 0), clean[:50])


def test_a_generator_gives_the_same_draws_as_its_seed():
    a = noisy_sine(100, 10, 0.5, np.random.default_rng(4))
    np.testing.assert_array_equal(a, noisy_sine(100, 10, 0.5, 4))


@settings(deadline=None)
@given(n=st.integers(1, 40), length=st.integers(1, 60), seed=st.integers(0, 10_000))
def test_classification_waveforms(n, length, seed):
    x, y = waveforms_classification(n, length, seed)
    assert x.shape == (n, length, 1) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert set(y.tolist()) <= set(range(len(WAVE_NAMES)))
    counts = np.bincount(y, minlength=4)
    assert counts.max() - counts.min() <= 1  # balanced classes
    assert np.all(np.abs(x) <= 1.0 + 1e-6)
    x2, y2 = waveforms_classification(n, length, seed)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_classification_depends_on_the_seed_and_adds_noise():
    x0, _ = waveforms_classification(16, 40, 0)
    x1, _ = waveforms_classification(16, 40, 1)
    assert not np.array_equal(x0, x1)
    xn, _ = waveforms_classification(16, 40, 0, noise_std=0.2)
    assert xn.shape == x0.shape and not np.array_equal(xn, x0)


def test_wave_kinds_look_as_documented():
    assert WAVE_NAMES == ("sine", "square", "sawtooth", "triangle")
    u = np.array([0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(wave(0, u), [0, 1, 0, -1], atol=1e-12)
    np.testing.assert_allclose(wave(1, u), [1, 1, -1, -1])
    np.testing.assert_allclose(wave(2, u), [0, 0.5, -1, -0.5])
    np.testing.assert_allclose(wave(3, u), [0, 1, 0, -1])
    with pytest.raises(ValueError, match="kind"):
        wave(4, u)


@settings(deadline=None)
@given(n=st.integers(1, 40), length=st.integers(1, 60), seed=st.integers(0, 10_000))
def test_generation_params_describe_their_waveforms(n, length, seed):
    low, high = 0.05, 0.2
    params, x = waveforms_generation(n, length, seed, freq_range=(low, high))
    assert params.shape == (n, len(GENERATION_PARAMS)) and params.dtype == np.float32
    assert x.shape == (n, length, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(params[:, :4].sum(axis=1), 1.0)
    kinds = params[:, :4].argmax(axis=1)
    freqs = low + params[:, 4].astype(np.float64) * (high - low)
    phases = params[:, 5].astype(np.float64)
    t = np.arange(length)
    for i in range(n):
        expected = wave(int(kinds[i]), freqs[i] * t + phases[i])
        # Loose: the params are float32, and a square wave may flip right at an edge.
        close = np.abs(x[i, :, 0] - expected) < 1e-3
        assert close.mean() > 0.9
    params2, x2 = waveforms_generation(n, length, seed, freq_range=(low, high))
    np.testing.assert_array_equal(params, params2)
    np.testing.assert_array_equal(x, x2)


def test_synthetic_data_leaves_the_global_rng_alone():
    np.random.seed(7)
    before = _global_state()
    noisy_sine(100, 10, 0.1, None)
    waveforms_classification(10, 20, None, noise_std=0.1)
    waveforms_generation(10, 20, 3)
    after = _global_state()
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1:] == after[1:]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: noisy_sine(0, 10, 0.1, 0), "length"),
        (lambda: noisy_sine(10, 0, 0.1, 0), "period"),
        (lambda: noisy_sine(10, 10, -1, 0), "noise_std"),
        (lambda: waveforms_classification(0, 10, 0), "n"),
        (lambda: waveforms_classification(4, 10, 0, freq_range=(0.2, 0.1)), "freq_range"),
        (lambda: waveforms_classification(4, 10, 0, freq_range=(0.1, np.inf)), "freq_range"),
        (lambda: waveforms_generation(4, 10, 0, freq_range=(0.1,)), "freq_range"),
        (lambda: waveforms_generation(4, 10, 0, freq_range="ab"), "freq_range"),
        (lambda: waveforms_generation(4, 0, 0), "length"),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
