"""Array backends: which array module holds a tensor's data.

A backend is data, not a module swap. Every array carries its own module
(`get_array_module(x)`), so the same op code runs on NumPy and CuPy. The
registry below only decides where *new* tensors and parameters are created.

Choose the default with, in increasing precedence for the code that runs:
the environment variable ``TINYGRAD_RNN_BACKEND``, ``use_backend(name)``, or
``with backend(name):``. The CLI flag ``--backend`` calls ``use_backend``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "BackendMismatchError",
    "register_backend",
    "get_backend",
    "available_backends",
    "use_backend",
    "backend",
    "default_backend",
    "get_array_module",
    "backend_of",
    "to_host",
]


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (not installed, or no device)."""


class BackendMismatchError(TypeError):
    """An op received arrays that live on two different backends."""


_PROBE_LOCK = threading.Lock()


@dataclass
class Backend:
    """One array backend: a name, how to import its module, and how to probe it.

    `probe` returns None when the backend can run, else a reason string.
    """

    name: str
    module_name: str
    install_hint: str
    probe: Callable[[Any], str | None] = field(default=lambda xp: None)
    _module: Any = field(default=None, repr=False)
    _checked: bool = field(default=False, repr=False)
    _reason: str | None = field(default=None, repr=False)

    def unavailable_reason(self) -> str | None:
        """None if usable, else why not (checked once, then cached). Threads asking while
        the check runs (CuPy's probe starts CUDA) wait for its answer."""
        if self._checked:
            return self._reason
        with _PROBE_LOCK:
            if not self._checked:
                self._check()
        return self._reason

    def _check(self) -> None:
        try:
            module = importlib.import_module(self.module_name)
        except Exception as err:  # ImportError, or a broken CUDA install
            self._reason = (
                f"backend {self.name!r} needs the Python package {self.module_name!r}, "
                f"which failed to import ({type(err).__name__}: {err}). {self.install_hint}"
            )
        else:
            reason = self.probe(module)
            if reason is None:
                self._module = module
            else:
                self._reason = f"backend {self.name!r} is installed but {reason}"
        self._checked = True  # last: a thread that sees it also sees the answer

    @property
    def xp(self) -> Any:
        """The array module; raises BackendUnavailableError if it cannot run."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(reason)
        return self._module

    def asarray(self, data: Any, dtype: Any = None) -> Any:
        """Move or convert `data` onto this backend."""
        xp = self.xp
        if xp is np and type(data).__module__.startswith("cupy"):
            return data.get() if dtype is None else data.get().astype(dtype)
        return xp.asarray(data, dtype=dtype)


def _probe_cupy(cupy: Any) -> str | None:
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        return f"no CUDA device is visible ({type(err).__name__}: {err})"
    if count < 1:
        return "no CUDA device is visible"
    return None


_REGISTRY: dict[str, Backend] = {}
# use_backend() sets a process-wide default, so threads (data loaders) agree with
# the main thread; `with backend(...)` overrides it for the current thread only.
_default_name: str | None = None
_state = threading.local()


def register_backend(b: Backend) -> Backend:
    """Add a backend to the registry (the built-ins use this too)."""
    _REGISTRY[b.name] = b
    return b


register_backend(Backend("numpy", "numpy", "Install it with `pip install numpy`."))
register_backend(
    Backend(
        "cupy",
        "cupy",
        "Install CuPy for your CUDA version: `pip install 'tinygrad-rnn[cuda12]'` "
        "or `pip install 'tinygrad-rnn[cuda13]'`.",
        probe=_probe_cupy,
    )
)


def available_backends() -> dict[str, str | None]:
    """Map each registered backend to None (usable) or the reason it is not."""
    return {name: b.unavailable_reason() for name, b in _REGISTRY.items()}


def get_backend(name: str | Backend | None = None) -> Backend:
    """The Backend named `name` (default: the current default backend)."""
    if isinstance(name, Backend):
        return name
    if name is None:
        return _REGISTRY[default_backend()]
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown backend {name!r}; expected one of {sorted(_REGISTRY)}"
        )
    return _REGISTRY[key]


def default_backend() -> str:
    """Name of the backend new tensors are created on."""
    name = getattr(_state, "name", None) or _default_name
    if name is None:
        name = os.environ.get("TINYGRAD_RNN_BACKEND", "numpy").strip().lower() or "numpy"
        if name not in _REGISTRY:
            raise ValueError(
                f"TINYGRAD_RNN_BACKEND={name!r} is not a backend; expected one of "
                f"{sorted(_REGISTRY)}"
            )
    return name


def use_backend(name: str) -> None:
    """Set the default backend for tensors and parameters created from now on.

    Raises BackendUnavailableError, saying why, if it cannot run here.
    """
    global _default_name
    b = get_backend(name)
    b.xp  # noqa: B018 - raises with the reason if unusable
    _default_name = b.name


@contextlib.contextmanager
def backend(name: str) -> Iterator[Backend]:
    """``with tr.backend("cupy"):`` creates new tensors on that backend inside."""
    b = get_backend(name)
    b.xp  # noqa: B018
    previous = getattr(_state, "name", None)
    _state.name = b.name
    try:
        yield b
    finally:
        _state.name = previous


def backend_of(array: Any) -> str:
    """'cupy' for a CuPy array, else 'numpy' (scalars and lists count as numpy)."""
    return "cupy" if type(array).__module__.startswith("cupy") else "numpy"


def _array_of(x: Any) -> Any:
    """A Tensor's `.data`, or `x` itself when it is already an array.

    Raw arrays are never unwrapped: ndarray.data is a buffer and
    cupy.ndarray.data a device pointer, not the array.
    """
    if hasattr(x, "__array__") or hasattr(x, "__cuda_array_interface__"):
        return x
    return getattr(x, "data", x)


def get_array_module(x: Any) -> Any:
    """The array module (numpy or cupy) of an array or a Tensor."""
    data = _array_of(x)
    if backend_of(data) == "cupy":
        return _REGISTRY["cupy"].xp
    return np


def scatter_add(xp: Any, target: Any, index: Any, values: Any) -> None:
    """target[index] += values, summing repeated indices (in place)."""
    add_at = getattr(xp.add, "at", None)  # CuPy has ufunc.at since v13
    if add_at is not None:
        try:
            add_at(target, index, values)
            return
        except NotImplementedError:
            pass
    import cupyx  # noqa: PLC0415 - only reached on an older CuPy

    cupyx.scatter_add(target, index, values)


def to_host(x: Any) -> np.ndarray:
    """A host NumPy array from a Tensor, a CuPy array or anything array-like."""
    data = _array_of(x)
    return data.get() if backend_of(data) == "cupy" else np.asarray(data)
