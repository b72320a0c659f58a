"""Small argument checks shared by the data modules (private)."""

import operator

import numpy as np


def positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int, or raise ValueError naming it if it is not an int >= 1."""
    try:
        number = operator.index(value)  # accepts numpy ints, refuses floats like 2.5
    except TypeError:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be >= 1, got {number}")
    return number


def as_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A private Generator for ``seed``; a Generator passed in is used as is (its state is shared).

    Never touches numpy's legacy global RNG.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
