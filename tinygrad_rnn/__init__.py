"""tinygrad-rnn: a small tape-based autograd for recurrent networks, on NumPy or CuPy.

    import tinygrad_rnn as tr
    x = tr.tensor([[1.0, 2.0]], requires_grad=True)
    y = (x * x).sum()
    y.backward()          # x.grad == 2 * x

The few names people use live here; the rest is in submodules: `tr.nn`,
`tr.optim`, `tr.data`, `tr.train`, `tr.testing`, `tr.interop`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .backend import (
    BackendMismatchError,
    BackendUnavailableError,
    available_backends,
    backend,
    get_array_module,
    use_backend,
)
from .ops import (
    add,
    clip,
    concatenate,
    div,
    exp,
    log,
    log_softmax,
    matmul,
    mean,
    mul,
    relu,
    reshape,
    sigmoid,
    softmax,
    split,
    stack,
    sub,
    tanh,
    transpose,
    where,
)
from .ops import max as max  # noqa: A004, PLC0414 - NumPy's names, on purpose
from .ops import sum as sum  # noqa: A004, PLC0414
from .random import default_generator, manual_seed
from .tensor import (
    GraphReleasedError,
    Tensor,
    enable_grad,
    is_grad_enabled,
    no_grad,
    tensor,
)
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

# Submodules and names loaded on first use, so `import tinygrad_rnn` stays light.
_LAZY = {
    "nn": ("tinygrad_rnn.nn", None),
    "optim": ("tinygrad_rnn.optim", None),
    "data": ("tinygrad_rnn.data", None),
    "train": ("tinygrad_rnn.train", None),
    "testing": ("tinygrad_rnn.testing", None),
    "interop": ("tinygrad_rnn.interop", None),
    "save": ("tinygrad_rnn.checkpoint", "save"),
    "load": ("tinygrad_rnn.checkpoint", "load"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tinygrad_rnn' has no attribute {name!r}")


__all__ = [
    "Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "GraphReleasedError",
    "use_backend", "backend", "get_array_module", "available_backends",
    "BackendUnavailableError", "BackendMismatchError", "manual_seed", "default_generator",
    "add", "sub", "mul", "div", "matmul", "sum", "mean", "max", "reshape", "transpose",
    "concatenate", "stack", "split", "exp", "log", "tanh", "sigmoid", "relu", "clip",
    "softmax", "log_softmax", "where", "set_num_threads", "get_num_threads", *_LAZY,
]  # fmt: skip
