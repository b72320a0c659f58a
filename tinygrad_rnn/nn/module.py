"""Module and Parameter: PyTorch's habits (`parameters()`, `state_dict()`,
`train()`/`eval()`), with weight ties found by identity.

A Module's attributes that are Parameters or Modules are registered when set,
so `linear.weight = emb.weight` ties the two by making them the same object.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backend import get_backend
from ..tensor import Tensor

__all__ = ["Parameter", "Module", "ModuleList"]


class Parameter(Tensor):
    """A leaf Tensor that a Module trains (requires_grad is always True)."""

    __slots__ = ()

    def __init__(self, data: Any, name: str | None = None):
        if data.dtype.kind != "f":
            raise TypeError(f"Parameter needs a floating dtype; got {data.dtype}")
        super().__init__(data, requires_grad=True, name=name)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, backend={self.backend!r})"


class Module:
    """Base class of layers and models.

    Subclasses set Parameters and sub-Modules as attributes in `__init__` and
    define `forward`; calling the module calls `forward`.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ---- traversal ---------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter), each parameter once: a tied one under its first name."""
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self) -> list[Parameter]:
        """Each trainable parameter once, even when tied (by identity)."""
        return [p for _, p in self.named_parameters()]

    def tied_names(self) -> dict[str, str]:
        """Map each alias name of a tied parameter to the name it is stored under."""
        first: dict[int, str] = {}
        aliases: dict[str, str] = {}
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                full = f"{prefix}.{name}" if prefix else name
                if id(p) in first:
                    aliases[full] = first[id(p)]
                else:
                    first[id(p)] = full
        return aliases

    # ---- modes and gradients -----------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, backend: str) -> Module:
        """Move every parameter to `backend` in place (ties survive: moved once)."""
        target = get_backend(backend)
        for p in self.parameters():
            if p.backend != target.name:
                p.data = target.asarray(p.data)
                p.grad = None if p.grad is None else target.asarray(p.grad)
        return self

    # ---- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host NumPy copies of the parameters, each under its first name."""
        return {name: p.numpy().copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays into the parameters in place, keeping backend and ties.

        Names and shapes are checked before anything is written, so a bad
        state dict leaves the module untouched.
        """
        own = dict(self.named_parameters())
        aliases = self.tied_names()
        state = {aliases.get(k, k): v for k, v in state.items()}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, value in state.items():
            if name not in own:
                continue
            shape = tuple(np.shape(value))
            if shape != own[name].shape:
                raise ValueError(
                    f"load_state_dict: {name!r} expects shape {own[name].shape}, got {shape}"
                )
        for name, value in state.items():
            if name in own:
                p = own[name]
                host = value.get() if hasattr(value, "get") else np.asarray(value)
                # Copy into the existing buffer: views held elsewhere (optimizers) stay valid.
                p.data[...] = get_backend(p.backend).asarray(host.astype(p.dtype, copy=False))

    def __repr__(self) -> str:
        lines = [f"  ({n}): {m!r}".replace("\n", "\n  ") for n, m in self._modules.items()]
        inner = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({inner})"
        return f"{type(self).__name__}({inner}\n" + "\n".join(lines) + "\n)"

    def extra_repr(self) -> str:
        return ""


class ModuleList(Module):
    """A list of sub-modules, registered under '0', '1', ..."""

    def __init__(self, modules: list[Module] | None = None):
        super().__init__()
        for m in modules or []:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
