"""Parameter initialisation, in place, from random numbers drawn on the host.

Every helper draws with NumPy on the host (from the library's generator, or
the `generator=` passed in) and then copies into the parameter's own buffer on
its backend, so one seed gives the same weights on NumPy and CuPy, and
optimizers holding the parameter see the new values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import get_backend
from ..random import default_generator
from ..tensor import Tensor

__all__ = [
    "uniform_",
    "normal_",
    "zeros_",
    "xavier_like_",
    "xavier_like",
    "textbook_init_",
    "TEXTBOOK_EMBEDDING_STD",
    "forget_bias_",
]

# The textbook's embedding scale, randn / 100: small, so a word's vector starts near zero.
TEXTBOOK_EMBEDDING_STD = 0.01


def _fill(param: Tensor, host: np.ndarray) -> Tensor:
    """Copy host values into `param`'s existing buffer (keeps backend, dtype, views)."""
    param.data[...] = get_backend(param.backend).asarray(host.astype(param.dtype, copy=False))
    return param


def _generator(generator: np.random.Generator | None) -> np.random.Generator:
    return default_generator() if generator is None else generator


def uniform_(param: Tensor, bound: float, generator: np.random.Generator | None = None) -> Tensor:
    """Fill `param` with U(-bound, bound) in place; returns `param`."""
    if not bound >= 0:
        raise ValueError(f"uniform_: bound must be >= 0; got {bound!r}")
    host = _generator(generator).uniform(-bound, bound, size=param.shape)
    return _fill(param, host)


def normal_(
    param: Tensor,
    std: float = 1.0,
    generator: np.random.Generator | None = None,
    mean: float = 0.0,
) -> Tensor:
    """Fill `param` with N(mean, std**2) in place; returns `param`."""
    if not std >= 0:
        raise ValueError(f"normal_: std must be >= 0; got {std!r}")
    host = _generator(generator).standard_normal(size=param.shape) * std + mean
    return _fill(param, host)


def zeros_(param: Tensor) -> Tensor:
    """Fill `param` with zeros in place; returns `param`."""
    param.data[...] = 0
    return param


def xavier_like_(
    param: Tensor, fan_in: int | None = None, generator: np.random.Generator | None = None
) -> Tensor:
    """The textbook init: standard normal scaled by 1/sqrt(fan_in), in place.

    `fan_in` defaults to the last axis, which is the input size for weights
    stored (out_features, in_features) as in Linear and the recurrent layers.
    """
    if fan_in is None:
        if param.ndim < 2:
            raise ValueError(
                f"xavier_like_: cannot infer fan_in from a parameter of shape {param.shape}; "
                "pass fan_in="
            )
        fan_in = param.shape[-1]
    if fan_in < 1:
        raise ValueError(f"xavier_like_: fan_in must be >= 1; got {fan_in}")
    return normal_(param, 1.0 / math.sqrt(fan_in), generator)


xavier_like = xavier_like_


def textbook_init_(
    module: Any,
    generator: np.random.Generator | None = None,
    embedding_std: float = TEXTBOOK_EMBEDDING_STD,
) -> Any:
    """Re-initialise a whole model the textbook way, in place; returns `module`.

    Embedding weights get randn * embedding_std (the textbook's randn/100 by
    default), other parameters with two or more axes
    randn/sqrt(fan_in) (fan_in = last axis), and 1-D parameters (biases) zeros.
    A tied parameter is initialised once, by the first module that holds it
    (an embedding tied to a decoder gets the embedding rule when the embedding
    comes first in the model).
    """
    from .layers import Embedding  # noqa: PLC0415 - layers imports this module

    done: set[int] = set()
    for submodule in module.modules():
        for param in submodule._parameters.values():
            if id(param) in done:
                continue
            done.add(id(param))
            if isinstance(submodule, Embedding):
                normal_(param, embedding_std, generator)
            elif param.ndim >= 2:
                xavier_like_(param, generator=generator)
            else:
                zeros_(param)
    return module


def forget_bias_(module: Any, value: float) -> Any:
    """Start every LSTM forget gate of `module` at bias `value`, in place; returns `module`.

    A forget bias of 1 (Gers et al., 2000; Keras's default) keeps the cell state
    early in training instead of halving it each step, so gradients reach far-back
    steps from the start. In each LSTM and LSTMCell the forget rows (PyTorch's
    gate order i, f, g, o: rows H to 2H) of `bias_ih` get `value` and those of
    `bias_hh` zero, so their sum is `value`. Other parameters are left as they are.
    """
    from .recurrent import LSTM, LSTMCell  # noqa: PLC0415 - recurrent imports this module

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"forget_bias_: value must be a finite number; got {value!r}")
    for submodule in module.modules():
        if not isinstance(submodule, (LSTM, LSTMCell)):
            continue
        H = submodule.hidden_size
        for name, param in submodule._parameters.items():
            if name.startswith("bias_ih"):
                param.data[H : 2 * H] = value
            elif name.startswith("bias_hh"):
                param.data[H : 2 * H] = 0
    return module
