"""PyTorch interop: move parameters between a torch module and ours, by name.

Our recurrent layers use PyTorch's parameter names and layouts
(`weight_ih_l0`, `bias_hh_l1_reverse`, ... and `weight_ih` ... for cells), so
the state dict of a `torch.nn.LSTM(batch_first=True)` loads as is. This
module never imports torch: tensors are recognised by their methods and
converted with `.detach().cpu().numpy()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .nn.module import Module

__all__ = ["load_torch_state_dict", "torch_state_dict"]


def _to_numpy(name: str, value: Any) -> np.ndarray:
    """A host NumPy array from a torch tensor, CuPy array, NumPy array or nested list."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):  # CuPy
        value = value.get()
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"load_torch_state_dict: {name!r} is not numeric; got dtype {array.dtype}")
    return array


def load_torch_state_dict(module: Module, state_dict: Mapping[str, Any]) -> None:
    """Copy a torch state dict into `module` in place (keeping its dtype and backend).

    Works for `torch.nn.RNN/LSTM/GRU(batch_first=True)` and the torch cells into
    ours, and for any Module whose parameter names match. Every key is checked
    before anything is written: a missing or extra key raises KeyError and a
    shape mismatch ValueError, each naming the parameter.
    """
    own = dict(module.named_parameters())
    aliases = module.tied_names()
    arrays = {aliases.get(k, k): _to_numpy(k, v) for k, v in state_dict.items()}
    missing = sorted(set(own) - set(arrays))
    unexpected = sorted(set(arrays) - set(own))
    if missing or unexpected:
        raise KeyError(
            f"load_torch_state_dict: {type(module).__name__} expects keys {sorted(own)}; "
            f"missing {missing}, unexpected {unexpected}"
        )
    for name, array in arrays.items():
        if array.shape != own[name].shape:
            raise ValueError(
                f"load_torch_state_dict: {name!r} expects shape {own[name].shape}; "
                f"got {array.shape}"
            )
    module.load_state_dict(arrays)


def torch_state_dict(module: Module, grads: bool = False) -> dict[str, np.ndarray | None]:
    """The module's parameters (or, with `grads=True`, their gradients) as host NumPy
    arrays under their (PyTorch) names. A parameter without a gradient maps to None,
    as torch's `.grad` does. A tied parameter appears under each of its names, as in
    torch's own state dict of a tied module (a strict `load_state_dict` wants them all).
    """
    out: dict[str, np.ndarray | None]
    if not grads:
        out = dict(module.state_dict())
    else:
        out = {}
        for name, p in module.named_parameters():
            g = p.grad
            out[name] = None if g is None else np.array(g.get() if hasattr(g, "get") else g)
    for alias, owner in module.tied_names().items():
        out[alias] = out[owner]
    return out
