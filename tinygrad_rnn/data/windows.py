"""Stateless windows over one series: each sample is independent, so batches may be shuffled.

This is the "many-to-one" regression style: the past ``window`` steps predict the next
``horizon`` steps. Split the series by time *before* windowing (``split_series``) so that no
window straddles train and validation.
"""

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ._checks import positive_int


def _as_series(series: ArrayLike) -> np.ndarray:
    """(L,) or (L, F) -> (L, F), keeping the dtype."""
    array = np.asarray(series)
    if array.ndim == 1:
        return array[:, None]
    if array.ndim == 2:
        return array
    raise ValueError(f"series must be (L,) or (L, F), got shape {array.shape}")


def sliding_windows(
    series: ArrayLike, window: int, horizon: int = 1, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a series into (input window, following steps) pairs.

    Args:
        series: (L,) or (L, F); a 1-D series counts as F = 1.
        window: W, input steps per sample.
        horizon: H, target steps that follow each window.
        stride: steps between the starts of consecutive windows.

    Returns:
        X (M, W, F) and Y (M, H, F) with ``X[i] = s[i*stride : i*stride+W]`` and
        ``Y[i] = s[i*stride+W : i*stride+W+H]``, ``M = (L - W - H) // stride + 1``.
        Both are fresh arrays with the series dtype.
    """
    window = positive_int(window, "window")
    horizon = positive_int(horizon, "horizon")
    stride = positive_int(stride, "stride")
    s = _as_series(series)
    length = s.shape[0]
    if length < window + horizon:
        raise ValueError(
            f"series of length {length} is shorter than window + horizon = "
            f"{window} + {horizon} = {window + horizon}"
        )
    count = (length - window - horizon) // stride + 1
    starts = np.arange(count) * stride
    # Fancy indexing copies, so the windows never alias the caller's series.
    x = s[starts[:, None] + np.arange(window)]  # (M, W, F)
    y = s[starts[:, None] + window + np.arange(horizon)]  # (M, H, F)
    return x, y


def split_series(series: ArrayLike, fractions: Sequence[float]) -> tuple[np.ndarray, ...]:
    """Split a series by time into consecutive, disjoint, in-order pieces.

    Piece k covers ``[floor(L * c[k-1]), floor(L * c[k]))`` where ``c`` is the running sum of
    ``fractions``; when the fractions sum to 1 the last piece ends at L, otherwise the tail
    is dropped. Pieces keep the input's shape after the time axis ((L,) or (L, F)).

    Args:
        series: (L, ...) array, time first.
        fractions: positive fractions with sum <= 1, e.g. (0.8, 0.1, 0.1).
    """
    array = np.asarray(series)
    if array.ndim == 0:
        raise ValueError("series must have a time axis, got a scalar")
    fracs = [float(f) for f in fractions]
    if not fracs:
        raise ValueError("fractions must not be empty")
    for f in fracs:
        if not math.isfinite(f) or f <= 0.0:
            raise ValueError(f"fractions must be positive and finite, got {tuple(fracs)}")
    total = math.fsum(fracs)
    if total > 1.0 + 1e-9:
        raise ValueError(f"fractions must sum to at most 1, got {tuple(fracs)} (sum {total!r})")
    length = array.shape[0]
    bounds = [0]
    running = 0.0
    for f in fracs:
        running += f
        # The small slack absorbs float error such as 0.7 + 0.2 + 0.1 = 0.9999999999999999.
        bounds.append(min(length, math.floor(length * running + 1e-6)))
    if abs(total - 1.0) <= 1e-9:
        bounds[-1] = length
    return tuple(array[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]))
