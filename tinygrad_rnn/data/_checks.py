"""Small argument checks shared by the data modules (private)."""

import operator

import numpy as np


def integer(value: object, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int (NumPy ints too, never a float like 2.5), within [low, high] where
    given; otherwise ValueError naming it, the range and the value."""
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}, got {number}")
    return number


def positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int, or raise ValueError naming it if it is not an int >= 1."""
    try:
        number = operator.index(value)  # accepts numpy ints, refuses floats like 2.5
    except TypeError:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be >= 1, got {number}")
    return number


def integer_pair(value: object, name: str, form: str) -> tuple[int, int]:
    """``value`` as two ints, e.g. ``(start, stop)`` (`form`), or ValueError naming it."""
    try:
        first, second = value  # type: ignore[misc]
        return operator.index(first), operator.index(second)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {form}, two integers; got {value!r}") from None


def as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A private Generator for ``seed``; a Generator passed in is used as is (its state is shared).

    Never touches numpy's legacy global RNG.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
