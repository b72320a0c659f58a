"""Seeded synthetic series: a noisy sine, and four waveform kinds for classification and
generation. Every function draws from its own Generator (``seed``: int or Generator).

Waveforms are functions of the cycle position ``u = (f * t + phase) mod 1`` at step
``t = 0..T-1``, with frequency f in cycles per step and phase in cycles, amplitude 1:
sine ``sin(2 pi u)``; square ``+1`` for ``u < 1/2`` else ``-1``; sawtooth ``2u - 1`` shifted
to rise through 0 at ``u = 0``; triangle, also rising through 0 at ``u = 0``.
"""

import math

import numpy as np

from ._checks import as_generator, positive_int

WAVE_NAMES = ("sine", "square", "sawtooth", "triangle")
# Column meaning of waveforms_generation's params (P = 6).
GENERATION_PARAMS = (*WAVE_NAMES, "frequency", "phase")

Seed = int | np.random.Generator | None


def noisy_sine(
    length: int,
    period: float,
    noise_std: float,
    seed: Seed,
    *,
    amplitude: float = 1.0,
    return_clean: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(L,) float32 ``amplitude * sin(2 pi t / period) + N(0, noise_std^2)`` for t = 0..L-1.

    With ``return_clean=True`` returns ``(noisy, clean)``, both (L,) float32.
    """
    length = positive_int(length, "length")
    if not period > 0:
        raise ValueError(f"period must be > 0, got {period}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    rng = as_generator(seed)
    clean = amplitude * np.sin(2 * np.pi * np.arange(length) / period)
    noisy = clean + rng.normal(0.0, noise_std, size=length)
    if return_clean:
        return noisy.astype(np.float32), clean.astype(np.float32)
    return noisy.astype(np.float32)


def wave(kind: int, u: np.ndarray) -> np.ndarray:
    """Waveform ``WAVE_NAMES[kind]`` at cycle positions u (any shape), amplitude 1."""
    u = np.mod(u, 1.0)
    if kind == 0:
        return np.sin(2 * np.pi * u)
    if kind == 1:
        return np.where(u < 0.5, 1.0, -1.0)
    if kind == 2:
        return 2.0 * np.mod(u + 0.5, 1.0) - 1.0
    if kind == 3:
        return 1.0 - 4.0 * np.abs(np.mod(u + 0.25, 1.0) - 0.5)
    raise ValueError(f"kind must be in 0..{len(WAVE_NAMES) - 1}, got {kind}")


def _check_freq_range(freq_range: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in freq_range)
    except (TypeError, ValueError):
        lo = hi = math.nan  # refused below, naming the value
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(
            f"freq_range must be (low, high), finite, with 0 < low <= high; got {freq_range!r}"
        )
    return lo, hi


def _waves(kinds: np.ndarray, freqs: np.ndarray, phases: np.ndarray, length: int) -> np.ndarray:
    """(n,) kinds, frequencies, phases -> (n, length) waveforms."""
    u = freqs[:, None] * np.arange(length) + phases[:, None]
    out = np.empty(u.shape)
    for kind in range(len(WAVE_NAMES)):
        rows = kinds == kind
        out[rows] = wave(kind, u[rows])
    return out


def waveforms_classification(
    n: int,
    length: int,
    seed: Seed,
    *,
    freq_range: tuple[float, float] = (1 / 32, 1 / 8),
    noise_std: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms labelled by kind, for many-to-one classification.

    Returns X (n, T, 1) float32 and y (n,) int64 with ``WAVE_NAMES[y]`` the kind; classes are
    balanced (counts differ by at most 1) in random order. Frequency is uniform in
    ``freq_range`` (cycles per step), phase uniform in [0, 1) cycles, plus optional Gaussian
    noise of std ``noise_std``.
    """
    n = positive_int(n, "n")
    length = positive_int(length, "length")
    lo, hi = _check_freq_range(freq_range)
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    rng = as_generator(seed)
    y = rng.permutation(np.arange(n) % len(WAVE_NAMES))
    freqs = rng.uniform(lo, hi, size=n)
    phases = rng.uniform(0.0, 1.0, size=n)
    x = _waves(y, freqs, phases, length)
    if noise_std > 0:
        x = x + rng.normal(0.0, noise_std, size=x.shape)
    return x[:, :, None].astype(np.float32), y.astype(np.int64)


def waveforms_generation(
    n: int,
    length: int,
    seed: Seed,
    *,
    freq_range: tuple[float, float] = (1 / 32, 1 / 8),
) -> tuple[np.ndarray, np.ndarray]:
    """Parameter vectors and the waveforms they describe, for one-to-many generation.

    Returns params (n, 6) float32 and X (n, T, 1) float32. Params columns are
    ``GENERATION_PARAMS``: one-hot kind (4), frequency scaled to [0, 1] over ``freq_range``
    (0 when the range is a single value), phase in [0, 1) cycles. Kinds are balanced.
    """
    n = positive_int(n, "n")
    length = positive_int(length, "length")
    lo, hi = _check_freq_range(freq_range)
    rng = as_generator(seed)
    kinds = rng.permutation(np.arange(n) % len(WAVE_NAMES))
    freqs = rng.uniform(lo, hi, size=n)
    phases = rng.uniform(0.0, 1.0, size=n)
    x = _waves(kinds, freqs, phases, length)
    params = np.zeros((n, len(GENERATION_PARAMS)), dtype=np.float32)
    params[np.arange(n), kinds] = 1.0
    params[:, 4] = (freqs - lo) / (hi - lo) if hi > lo else 0.0
    params[:, 5] = phases
    return params, x[:, :, None].astype(np.float32)
