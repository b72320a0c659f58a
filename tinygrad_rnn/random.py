"""The library's random numbers: one seeded NumPy Generator on the host.

Initialisation, dropout masks and sampling draw from it (or from a
`numpy.random.Generator` passed in), never from NumPy's global RNG. Numbers are
drawn on the host and then moved to the tensor's backend, so a seed gives the
same numbers on NumPy and CuPy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "default_generator", "get_rng_state", "set_rng_state"]

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the library's default generator, in place, and return it.

    In place, so layers that hold the default generator see the new seed.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int; got {seed!r}")
    _generator.bit_generator.state = np.random.default_rng(int(seed)).bit_generator.state
    return _generator


def default_generator() -> np.random.Generator:
    """The generator used when a layer or op is given none."""
    return _generator


def get_rng_state() -> dict:
    """The default generator's state, JSON-able (for checkpoints)."""
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state saved by `get_rng_state`."""
    _generator.bit_generator.state = state
