"""Optimizers: SGD, AdaGrad, RMSprop, Adam, with PyTorch's update rules.

    optimizer = tr.optim.Adam(model.parameters(), lr=1e-3)
    optimizer.zero_grad(); loss.backward(); optimizer.step()

Each optimizer holds its parameters once each (a tied parameter listed twice
is updated once per step), skips parameters whose `.grad` is None, and updates
parameters and its state in place, with a reused scratch buffer instead of
temporaries. `lr` is a plain attribute a trainer may change between steps.

State dicts keep PyTorch's layout so they read the same way:
``{"state": {index: {"step": int, "exp_avg": array, ...}}, "param_groups":
[{"lr": ..., <other hyperparameters>, "params": [0, 1, ...]}]}`` with one group,
per-parameter entries only for parameters that have taken a step, host NumPy
arrays, and JSON-able scalars, so a checkpoint can store them without pickle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .backend import get_array_module, get_backend
from .tensor import Tensor
from .threads import PARALLEL_ELEMENTS, parallel_rows

__all__ = ["Optimizer", "SGD", "AdaGrad", "Adagrad", "RMSprop", "Adam"]


def _check_number(optimizer: str, name: str, value: Any, low: float, high: float = math.inf):
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = low <= value < high
    if not ok:
        raise ValueError(f"{optimizer}: {name} must be a number in [{low}, {high}); got {value!r}")
    return value


class Optimizer:
    """Base class: the parameter list, hyperparameters, per-parameter state.

    A subclass sets `_hyperparameters` (names of attributes saved in the state
    dict), `_state_arrays` (PyTorch's names of its per-parameter arrays) and
    implements `_update(index, param, grad)`.
    """

    _hyperparameters: tuple[str, ...] = ("lr",)
    _state_arrays: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Tensor], lr: float):
        name = type(self).__name__
        if isinstance(params, Tensor):
            params = [params]
        unique: list[Tensor] = []
        seen: set[int] = set()
        for i, p in enumerate(params):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(
                    f"{name}: params[{i}] must be a Tensor with requires_grad=True (a Parameter); "
                    f"got {type(p).__name__}"
                )
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        if not unique:
            raise ValueError(f"{name}: got an empty parameter list")
        self.params = unique
        self.lr = _check_number(name, "lr", lr, 0.0)
        self.state: dict[int, dict[str, Any]] = {}
        self._scratch_buffers: dict[tuple[str, str], Any] = {}

    # ---- the training loop's calls -------------------------------------------------
    def zero_grad(self) -> None:
        """Drop every parameter's gradient (the next backward starts fresh)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place (all gradients are
        checked first: a bad one raises before any parameter has moved)."""
        self._check_grads()
        for index, p in enumerate(self.params):
            if p.grad is not None:
                self._update(index, p, p.grad)

    def _check_grads(self) -> None:
        for index, p in enumerate(self.params):
            if p.grad is not None and p.grad.shape != p.data.shape:
                raise ValueError(
                    f"{type(self).__name__}.step: parameter {index} has shape {p.shape} but its "
                    f"grad has shape {tuple(p.grad.shape)}"
                )

    def _update(self, index: int, param: Tensor, grad: Any) -> None:
        raise NotImplementedError

    # ---- helpers for subclasses --------------------------------------------------
    def _scratch(self, param: Tensor) -> Any:
        """A temporary the shape of `param`, shared by all parameters of its backend/dtype."""
        key = (param.backend, param.dtype)
        buffer = self._scratch_buffers.get(key)
        if buffer is None or buffer.size < param.size:
            xp = get_array_module(param.data)
            buffer = xp.empty(param.size, dtype=param.dtype)
            self._scratch_buffers[key] = buffer
        return buffer[: param.size].reshape(param.shape)

    def _with_weight_decay(self, param: Tensor, grad: Any, weight_decay: float) -> Any:
        """grad + weight_decay * param (a new array; the stored .grad is left alone)."""
        if weight_decay == 0:
            return grad
        return grad + weight_decay * param.data

    @staticmethod
    def _zeros_like(param: Tensor) -> Any:
        return get_array_module(param.data).zeros_like(param.data)

    # ---- state -------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        """The current hyperparameters as JSON-able values."""
        out = {}
        for key in self._hyperparameters:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def state_dict(self) -> dict[str, Any]:
        """A host copy of the state, in PyTorch's layout (see the module docstring)."""
        state = {}
        for index, entry in self.state.items():
            state[index] = {
                k: (v.get() if hasattr(v, "get") else np.array(v)) if k in self._state_arrays else v
                for k, v in entry.items()
            }
        group = {**self.hyperparameters(), "params": list(range(len(self.params)))}
        return {"state": state, "param_groups": [group]}

    def validate_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Raise ValueError/KeyError naming the problem if `state_dict` does not fit
        this optimizer and its parameters. Writes nothing."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise KeyError(f"{name}: a state dict has keys ['param_groups', 'state']; got {keys}")
        groups = state_dict["param_groups"]
        if not isinstance(groups, list) or len(groups) != 1:
            raise ValueError(f"{name}: expected exactly one param group; got {groups!r}")
        group = groups[0]
        missing = [k for k in (*self._hyperparameters, "params") if k not in group]
        if missing:
            raise KeyError(f"{name}: the param group misses {missing}")
        if list(group["params"]) != list(range(len(self.params))):
            raise ValueError(
                f"{name}: the state dict is for {len(group['params'])} parameters; this optimizer "
                f"has {len(self.params)}"
            )
        self._check_hyperparameters(group)
        if not isinstance(state_dict["state"], dict):
            raise ValueError(f"{name}: state_dict['state'] must be a dict")
        for raw_index, entry in state_dict["state"].items():
            try:
                index = int(raw_index)
            except (TypeError, ValueError):
                raise KeyError(
                    f"{name}: state key {raw_index!r} is not a parameter index"
                ) from None
            if not isinstance(entry, dict):
                raise ValueError(f"{name}: state of parameter {index} must be a dict")
            if not 0 <= index < len(self.params):
                raise KeyError(f"{name}: state for parameter {raw_index!r}, which does not exist")
            param = self.params[index]
            expected = set(self._expected_state(group))
            if set(entry) != expected:
                raise KeyError(
                    f"{name}: state of parameter {index} has keys {sorted(entry)}; expected "
                    f"{sorted(expected)}"
                )
            for key, value in entry.items():
                if key not in self._state_arrays:
                    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                    if not is_int or value < 0:
                        raise ValueError(
                            f"{name}: state {index}/{key} must be an int >= 0; got {value!r}"
                        )
                    continue
                if getattr(value, "dtype", None) is None:
                    raise ValueError(
                        f"{name}: state {index}/{key} must be an array; got {type(value).__name__}"
                    )
                shape = tuple(value.shape)
                if shape != param.shape:
                    raise ValueError(
                        f"{name}: state {index}/{key} has shape {shape}; expected {param.shape}"
                    )
                if np.dtype(value.dtype) != param.dtype:
                    raise ValueError(
                        f"{name}: state {index}/{key} has dtype {value.dtype}; expected "
                        f"{param.dtype}"
                    )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state (validated first; nothing changes on error).

        Arrays go to each parameter's backend, so a state saved on NumPy loads on CuPy.
        """
        self.validate_state_dict(state_dict)
        group = state_dict["param_groups"][0]
        for key in self._hyperparameters:
            value = group[key]
            setattr(self, key, tuple(value) if isinstance(value, list) else value)
        state: dict[int, dict[str, Any]] = {}
        for raw_index, entry in state_dict["state"].items():
            index = int(raw_index)
            param = self.params[index]
            target = get_backend(param.backend)
            state[index] = {
                k: target.asarray(v).copy() if k in self._state_arrays else int(v)
                for k, v in entry.items()
            }
        self.state = state

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        """The constructor's own checks on the saved hyperparameters (an lr of -1 or a
        third beta would load, then ascend or fail at the next step)."""
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in group.items()
                 if k in self._hyperparameters}  # fmt: skip
        try:
            type(self)(self.params, **hyper)  # built and dropped: it only checks
        except ValueError as err:
            raise ValueError(f"the state dict's param group: {err}") from None

    def _expected_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The per-parameter state keys for these hyperparameters."""
        return ("step", *self._state_arrays)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({len(self.params)} parameters, {hyper})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    As PyTorch: d = grad + weight_decay * p; with momentum, buf = momentum * buf
    + (1 - dampening) * d (buf = d on the first step), then d = buf, or
    d + momentum * buf with Nesterov; p -= lr * d. State: "momentum_buffer".
    """

    _hyperparameters = ("lr", "momentum", "dampening", "nesterov", "weight_decay")
    _state_arrays = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
    ):
        super().__init__(params, lr)
        self.momentum = _check_number("SGD", "momentum", momentum, 0.0)
        self.dampening = _check_number("SGD", "dampening", dampening, 0.0)
        self.weight_decay = _check_number("SGD", "weight_decay", weight_decay, 0.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening == 0")

    def _expected_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] else ()

    def _update(self, index: int, param: Tensor, grad: Any) -> None:
        xp = get_array_module(param.data)
        d = self._with_weight_decay(param, grad, self.weight_decay)
        scratch = self._scratch(param)
        if self.momentum:
            entry = self.state.setdefault(index, {})
            buf = entry.get("momentum_buffer")
            if buf is None:
                buf = entry["momentum_buffer"] = d.copy()
            else:
                buf *= self.momentum
                if self.dampening:
                    xp.multiply(d, 1 - self.dampening, out=scratch)
                    buf += scratch
                else:
                    buf += d
            if self.nesterov:
                xp.multiply(buf, self.momentum, out=scratch)
                scratch += d
                d = scratch
            else:
                d = buf
        _subtract_scaled(xp, param.data, d, self.lr, scratch)


# Elements per block of `_subtract_scaled`: its scratch block stays in L1/L2.
_UPDATE_BLOCK = 1 << 15


def _subtract_scaled(xp: Any, target: Any, source: Any, scale: float, scratch: Any) -> None:
    """target -= scale * source, in place. On NumPy, block by block so the scaled
    block is still in cache when it is subtracted (two passes over memory, not three),
    a large parameter's blocks spread over the library's threads."""
    if xp is not np or target.size <= _UPDATE_BLOCK or not (
        target.flags.c_contiguous and source.flags.c_contiguous and scratch.flags.c_contiguous
    ):
        xp.multiply(source, scale, out=scratch)
        target -= scratch
        return
    flat_target, flat_source = target.reshape(-1), source.reshape(-1)
    flat_scratch = scratch.reshape(-1)

    def update(lo: int, hi: int) -> None:
        # Each range scales into its own stretch of scratch, at the start of its elements.
        for start in range(lo, hi, _UPDATE_BLOCK):
            stop = min(start + _UPDATE_BLOCK, hi)
            part = flat_scratch[lo : lo + stop - start]
            np.multiply(flat_source[start:stop], scale, out=part)
            np.subtract(flat_target[start:stop], part, out=flat_target[start:stop])

    parallel_rows(xp, target.size, update, min_rows=PARALLEL_ELEMENTS)


class AdaGrad(Optimizer):
    """AdaGrad, as PyTorch's Adagrad: sum += grad**2; p -= clr * grad / (sqrt(sum) + eps)
    with clr = lr / (1 + (step - 1) * lr_decay). State: "step", "sum"."""

    _hyperparameters = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
    _state_arrays = ("sum",)

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ):
        super().__init__(params, lr)
        self.lr_decay = _check_number("AdaGrad", "lr_decay", lr_decay, 0.0)
        self.weight_decay = _check_number("AdaGrad", "weight_decay", weight_decay, 0.0)
        self.initial_accumulator_value = _check_number(
            "AdaGrad", "initial_accumulator_value", initial_accumulator_value, 0.0
        )
        self.eps = _check_number("AdaGrad", "eps", eps, 0.0)

    def _update(self, index: int, param: Tensor, grad: Any) -> None:
        xp = get_array_module(param.data)
        entry = self.state.get(index)
        if entry is None:
            total = xp.full_like(param.data, self.initial_accumulator_value)
            entry = self.state[index] = {"step": 0, "sum": total}
        entry["step"] += 1
        g = self._with_weight_decay(param, grad, self.weight_decay)
        clr = self.lr / (1 + (entry["step"] - 1) * self.lr_decay)
        scratch = self._scratch(param)
        xp.multiply(g, g, out=scratch)
        entry["sum"] += scratch
        xp.sqrt(entry["sum"], out=scratch)
        scratch += self.eps
        xp.divide(g, scratch, out=scratch)
        scratch *= clr
        param.data -= scratch


Adagrad = AdaGrad  # PyTorch's spelling


class RMSprop(Optimizer):
    """RMSprop, as PyTorch: square_avg = alpha * square_avg + (1 - alpha) * grad**2;
    avg = sqrt(square_avg [- grad_avg**2 if centered]) + eps; p -= lr * grad / avg,
    or through a momentum buffer. State: "step", "square_avg", and
    "momentum_buffer" (momentum > 0) and "grad_avg" (centered)."""

    _hyperparameters = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    _state_arrays = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ):
        super().__init__(params, lr)
        self.alpha = _check_number("RMSprop", "alpha", alpha, 0.0, 1.0 + 1e-12)
        self.eps = _check_number("RMSprop", "eps", eps, 0.0)
        self.weight_decay = _check_number("RMSprop", "weight_decay", weight_decay, 0.0)
        self.momentum = _check_number("RMSprop", "momentum", momentum, 0.0)
        self.centered = bool(centered)

    def _expected_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        keys = ["step", "square_avg"]
        if group["momentum"]:
            keys.append("momentum_buffer")
        if group["centered"]:
            keys.append("grad_avg")
        return tuple(keys)

    def _update(self, index: int, param: Tensor, grad: Any) -> None:
        xp = get_array_module(param.data)
        entry = self.state.get(index)
        if entry is None:
            entry = self.state[index] = {"step": 0, "square_avg": self._zeros_like(param)}
            if self.momentum:
                entry["momentum_buffer"] = self._zeros_like(param)
            if self.centered:
                entry["grad_avg"] = self._zeros_like(param)
        entry["step"] += 1
        g = self._with_weight_decay(param, grad, self.weight_decay)
        scratch = self._scratch(param)
        square_avg = entry["square_avg"]
        square_avg *= self.alpha
        xp.multiply(g, g, out=scratch)
        scratch *= 1 - self.alpha
        square_avg += scratch
        if self.centered:
            grad_avg = entry["grad_avg"]
            xp.subtract(g, grad_avg, out=scratch)
            scratch *= 1 - self.alpha
            grad_avg += scratch  # lerp towards g
            xp.multiply(grad_avg, grad_avg, out=scratch)
            xp.subtract(square_avg, scratch, out=scratch)
            xp.sqrt(scratch, out=scratch)
        else:
            xp.sqrt(square_avg, out=scratch)
        scratch += self.eps
        xp.divide(g, scratch, out=scratch)  # grad / avg
        if self.momentum:
            buf = entry["momentum_buffer"]
            buf *= self.momentum
            buf += scratch
            xp.multiply(buf, self.lr, out=scratch)
        else:
            scratch *= self.lr
        param.data -= scratch


class Adam(Optimizer):
    """Adam, as PyTorch (L2 `weight_decay` added to the gradient, no AMSGrad):

    m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g**2
    p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    with a step count t per parameter. State: "step", "exp_avg" (m), "exp_avg_sq" (v).
    """

    _hyperparameters = ("lr", "betas", "eps", "weight_decay")
    _state_arrays = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair (beta1, beta2); got {betas!r}")
        self.betas = (
            _check_number("Adam", "betas[0]", betas[0], 0.0, 1.0),
            _check_number("Adam", "betas[1]", betas[1], 0.0, 1.0),
        )
        self.eps = _check_number("Adam", "eps", eps, 0.0)
        self.weight_decay = _check_number("Adam", "weight_decay", weight_decay, 0.0)
        self._flat: _FlatState | None = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place.

        On NumPy, when every parameter has a gradient, all share a dtype and their
        step count, and there is no weight decay (a training loop's usual case), the
        update runs once over one flat array holding all parameters' moments: a
        small model's step then costs a dozen array passes instead of a dozen per
        parameter. The arithmetic per element is the same either way.
        """
        flat = self._flat_state()
        if flat is None:
            super().step()
            return
        xp = np
        for index in range(len(self.params)):
            self.state[index]["step"] += 1
        step = self.state[0]["step"]
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**step)
        inv_bc2_sqrt = 1.0 / math.sqrt(1 - beta2**step)
        scratch = flat.scratch
        xp.concatenate([p.grad.reshape(-1) for p in self.params], out=flat.grad)
        _adam_update_into(xp, flat.grad, flat.exp_avg, flat.exp_avg_sq, scratch, beta1, beta2,
                          self.eps, step_size, inv_bc2_sqrt)
        for p, update in zip(self.params, flat.views(scratch)):
            xp.subtract(p.data, update, out=p.data)

    def _flat_state(self) -> _FlatState | None:
        """The flat moments for this step, (re)built when needed; None: update per parameter."""
        params = self.params
        if self.weight_decay or len(params) < 2:
            return None
        first = params[0]
        for p in params:
            if (
                p.grad is None
                or type(p.data) is not np.ndarray
                or p.dtype != first.dtype
                or p.grad.dtype != first.dtype
                or p.grad.shape != p.data.shape
            ):
                return None
        flat = self._flat
        if flat is not None and flat.owns(self.state):
            return flat
        # First step, or the state was loaded or stepped per parameter: gather it.
        steps = {entry.get("step") for entry in self.state.values()}
        if self.state and (len(self.state) != len(params) or len(steps) != 1):
            return None
        self._flat = flat = _FlatState(params, self.state)
        return flat

    def _update(self, index: int, param: Tensor, grad: Any) -> None:
        xp = get_array_module(param.data)
        beta1, beta2 = self.betas
        entry = self.state.get(index)
        if entry is None:
            entry = self.state[index] = {
                "step": 0,
                "exp_avg": self._zeros_like(param),
                "exp_avg_sq": self._zeros_like(param),
            }
        entry["step"] += 1
        step = entry["step"]
        g = self._with_weight_decay(param, grad, self.weight_decay)
        m, v = entry["exp_avg"], entry["exp_avg_sq"]
        step_size = self.lr / (1 - beta1**step)
        inv_bc2_sqrt = 1.0 / math.sqrt(1 - beta2**step)
        if xp is not np:  # CuPy: the same arithmetic as one fused kernel
            scalar = param.dtype.type
            _fused_adam_kernel(xp)(
                g, *map(scalar, (beta1, beta2, self.eps, step_size, inv_bc2_sqrt)), param.data, m, v
            )
            return
        scratch = self._scratch(param)
        _adam_update_into(xp, g, m, v, scratch, beta1, beta2, self.eps, step_size, inv_bc2_sqrt)
        param.data -= scratch


def _adam_update_into(xp, g, m, v, scratch, beta1, beta2, eps, step_size, inv_bc2_sqrt) -> None:
    """Advance Adam's moments m, v in place and write the step into `scratch`.

    Eleven in-place passes through one scratch buffer, no temporaries (NumPy
    has no fused kernel); shared by the per-parameter and the flat paths.
    """
    xp.subtract(g, m, out=scratch)
    scratch *= 1 - beta1
    m += scratch  # m lerps towards g
    v *= beta2
    xp.multiply(g, g, out=scratch)
    scratch *= 1 - beta2
    v += scratch
    xp.sqrt(v, out=scratch)
    scratch *= inv_bc2_sqrt
    scratch += eps
    xp.divide(m, scratch, out=scratch)
    scratch *= step_size


class _FlatState:
    """Adam's moments of all parameters in flat NumPy arrays; the per-parameter state
    entries hold views into them, so `state_dict` and per-parameter steps still work."""

    def __init__(self, params: list[Tensor], state: dict[int, dict[str, Any]]):
        sizes = [p.size for p in params]
        self.shapes = [p.shape for p in params]
        self.bounds = np.cumsum([0, *sizes])
        total, dtype = int(self.bounds[-1]), params[0].dtype
        self.exp_avg = np.zeros(total, dtype=dtype)
        self.exp_avg_sq = np.zeros(total, dtype=dtype)
        self.grad = np.empty(total, dtype=dtype)
        self.scratch = np.empty(total, dtype=dtype)
        for name, flat in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            for index, view in enumerate(self.views(flat)):
                entry = state.setdefault(index, {"step": 0})
                if name in entry:
                    view[...] = entry[name]
                entry[name] = view
        self._entries = [state[index] for index in range(len(params))]

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """`flat` cut into one array per parameter, each of its shape."""
        return [
            flat[self.bounds[k] : self.bounds[k + 1]].reshape(shape)
            for k, shape in enumerate(self.shapes)
        ]

    def owns(self, state: dict[int, dict[str, Any]]) -> bool:
        """Whether `state` is still the one these arrays back (not replaced by a load)
        and every parameter is at the same step (none skipped one since)."""
        step = self._entries[0]["step"]
        return len(state) == len(self._entries) and all(
            state.get(index) is entry and entry["step"] == step
            for index, entry in enumerate(self._entries)
        )


_ADAM_KERNELS: dict[int, Any] = {}


def _fused_adam_kernel(xp: Any) -> Any:
    """Adam's update for one parameter as a single CuPy elementwise kernel (p, m, v in place)."""
    kernel = _ADAM_KERNELS.get(id(xp))
    if kernel is None:
        kernel = xp.ElementwiseKernel(
            "T g, T beta1, T beta2, T eps, T step_size, T inv_bc2_sqrt",
            "T p, T m, T v",
            """
            m += (1 - beta1) * (g - m);
            v = beta2 * v + (1 - beta2) * g * g;
            p -= step_size * m / (sqrt(v) * inv_bc2_sqrt + eps);
            """,
            "tinygrad_rnn_adam",
        )
        _ADAM_KERNELS[id(xp)] = kernel
    return kernel
