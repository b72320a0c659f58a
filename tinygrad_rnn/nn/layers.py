"""The non-recurrent layers: Linear, Embedding, Dropout.

Each layer's forward is a single fused op from `functional` (one tape entry).
Parameters are created on the default backend in float32 unless `dtype=` says
otherwise, and initialised on the host (see `init`), so a seed gives the same
weights on NumPy and CuPy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import get_backend
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module, Parameter

__all__ = ["Linear", "Embedding", "Dropout"]


def _new_parameter(shape: tuple[int, ...], dtype: Any) -> Parameter:
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"parameters need a floating dtype; got dtype={dtype}")
    backend = get_backend()
    return Parameter(backend.xp.zeros(shape, dtype=dtype))


def _check_size(layer: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int; got {value!r}")
    return int(value)


class Linear(Module):
    """y = x @ weight.T + bias, for x of shape (..., in_features) -> (..., out_features).

    `weight` is (out_features, in_features) and `bias` (out_features,), as in
    PyTorch, and both start as U(-1/sqrt(in_features), 1/sqrt(in_features)),
    PyTorch's default bound. Tie weights by assignment (`linear.weight =
    emb.weight`): the two layers then share one Parameter object.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = None,
        generator: np.random.Generator | None = None,
    ):
        super().__init__()
        self.in_features = _check_size("Linear", "in_features", in_features)
        self.out_features = _check_size("Linear", "out_features", out_features)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = init.uniform_(
            _new_parameter((self.out_features, self.in_features), dtype), bound, generator
        )
        self.bias = (
            init.uniform_(_new_parameter((self.out_features,), dtype), bound, generator)
            if bias
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_features) -> (..., out_features)."""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Embedding(Module):
    """A lookup table: integer ids (...) -> rows of `weight` (..., embedding_dim).

    `weight` is (num_embeddings, embedding_dim), initialised from the standard
    normal N(0, 1) as in PyTorch. Ids may be a NumPy/CuPy array, a list or an
    integer Tensor of any shape; an id outside [0, num_embeddings) raises
    IndexError naming it. Repeated ids sum their gradients.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        dtype: Any = None,
        generator: np.random.Generator | None = None,
    ):
        super().__init__()
        self.num_embeddings = _check_size("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = _check_size("Embedding", "embedding_dim", embedding_dim)
        self.weight = init.normal_(
            _new_parameter((self.num_embeddings, self.embedding_dim), dtype), 1.0, generator
        )

    def forward(self, ids: Any) -> Tensor:
        """(...) integer ids -> (..., embedding_dim)."""
        return F.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and
    scale the survivors by 1/(1-p); in eval mode, the identity.

    The mask is drawn on the host from `generator` (default: the library's
    generator at call time) and moved to the input's backend.
    """

    def __init__(self, p: float = 0.5, generator: np.random.Generator | None = None):
        super().__init__()
        self.p = F._check_p(p)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        """Any shape -> the same shape."""
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"
