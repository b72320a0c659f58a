"""Per-step math of the recurrent cells: tanh RNN, LSTM and GRU.

Each cell is a small class that knows its gate count and two things only:
how one time step turns gate pre-activations into the new state (`step`), and
how the gradient of a step's new state goes back to its gate pre-activations
(`backward_factors` for everything that can be computed for all steps at
once, then `step_backward` inside the time loop). The sequence driver in
`recurrent.py` owns the rest: the time loop, the big matmuls, directions,
stacking and padding. The cell modules (`LSTMCell`, ...) run that same driver
with T = 1, so these equations exist once.

Arrays are step-major: a per-call buffer is indexed by step first,
`buffer[s]`. A bidirectional layer runs both directions in the same call, its
arrays carrying a direction axis after the step axis; written `lead` below,
lead = () for one direction and (2,) for two. Shapes: per-step gates
(*lead, N, G*H), states (*lead, N, H); per-call buffers (T, *lead, N, ...).
Everything is elementwise over `lead`, so the equations never mention it.

The driver hands `step` its input projection already multiplied by
`gate_scale` (and the hidden matmul uses weights scaled the same way), so a
sigmoid gate costs one tanh: sigmoid(a) = 0.5 * tanh(0.5 * a) + 0.5, which
also never overflows. Scaling by 0.5 is exact in floating point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["CellMath", "RNNMath", "LSTMMath", "GRUMath", "CELL_MATH"]

# project_hidden(h, out): out[...] = h @ W_hh.T (scaled), per direction; h (*lead, N, H).
ProjectHidden = Callable[[Any, Any], None]


def _sigmoid_from_half_tanh(xp: Any, a: Any) -> None:
    """In place: a holds 0.5 * pre-activation; afterwards sigmoid(pre-activation)."""
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5


class CellMath:
    """The per-step equations of one cell type; stateless, one instance per type.

    Subclasses set `name`, `gate_count` (G), `state_count` (1 for h, 2 for
    (h, c)), `gate_scale` (per gate: 0.5 for sigmoid gates, 1 otherwise) and
    `shares_gate_grads` (True when the gradient of the input pre-activations
    equals that of the hidden ones, so the driver keeps one buffer).
    """

    name: str = ""
    gate_count: int = 1
    state_count: int = 1
    gate_scale: tuple[float, ...] = (1.0,)
    shares_gate_grads: bool = True

    def split_bias(self, b_ih: Any, b_hh: Any) -> tuple[Any, Any]:
        """(bias folded into the input projection, bias the step adds itself or None).

        b_ih, b_hh: (*lead, G*H). Folding b_hh saves one add per step; a step bias
        is returned shaped to broadcast over (*lead, N, H).
        """
        return b_ih + b_hh, None

    def workspace(
        self,
        xp: Any,
        time_size: int,
        lead: tuple[int, ...],
        batch: int,
        hidden_size: int,
        dtype: Any,
    ) -> dict[str, Any]:
        """Buffers a forward call fills and its backward reads, preallocated once."""
        return {}

    def step(
        self,
        xp: Any,
        s: int,
        pre_x: Any,
        prev: Sequence[Any],
        new: Sequence[Any],
        project_hidden: ProjectHidden,
        step_bias: Any,
        saved: dict[str, Any],
    ) -> None:
        """Write the states after step `s` into `new` (views, (*lead, N, H) each).

        pre_x: (*lead, N, G*H) scaled input projection of this step (biases folded in).
        """
        raise NotImplementedError

    def backward_factors(
        self,
        xp: Any,
        saved: dict[str, Any],
        entering: Sequence[Any],
        leaving: Sequence[Any],
        valid: Any,
    ) -> dict[str, Any]:
        """Everything `step_backward` needs that does not depend on the incoming gradient.

        entering/leaving: per state, (T, *lead, N, H) states before/after each step.
        valid: (T, *lead, N, 1) 1.0 at real steps, 0.0 at padded ones, or None; it is
        folded in here so padded steps pass their state gradient straight through.
        """
        raise NotImplementedError

    def step_backward(
        self,
        xp: Any,
        s: int,
        dh: Any,
        d_extra: Sequence[Any],
        factors: dict[str, Any],
        dpre_x: Any,
        dpre_h: Any,
    ) -> Any:
        """Gate gradients of step `s` from the gradient of its new state.

        dh: (*lead, N, H) gradient of the new h. d_extra: gradients of the other
        states (LSTM: [dc]), updated in place to those of the previous states.
        Writes dpre_x and dpre_h, (*lead, N, G, H) views (the same array when
        `shares_gate_grads`). Returns the part of the previous h's gradient that
        does not go through W_hh (or None); the driver adds dpre_h @ W_hh.
        """
        raise NotImplementedError

    @staticmethod
    def _carry(valid: Any) -> Any:
        """Factor that passes a state gradient through padded steps (None: no padding)."""
        return None if valid is None else 1 - valid


def _blocks(gates: Any, H: int, count: int) -> list[Any]:
    """The gates' blocks along the last axis, as views: (..., G*H) -> G arrays (..., H)."""
    return [gates[..., k * H : (k + 1) * H] for k in range(count)]


def _one_minus_square(xp: Any, a: Any, out: Any) -> Any:
    """out = 1 - a * a (tanh's derivative from its output), without temporaries."""
    xp.multiply(a, a, out=out)
    xp.subtract(1, out, out=out)
    return out


class RNNMath(CellMath):
    """Elman RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""

    name = "rnn"

    def step(self, xp, s, pre_x, prev, new, project_hidden, step_bias, saved):
        h = new[0]
        project_hidden(prev[0], h)
        h += pre_x
        xp.tanh(h, out=h)

    def backward_factors(self, xp, saved, entering, leaving, valid):
        tanh_grad = _one_minus_square(xp, leaving[0], xp.empty_like(leaving[0]))
        if valid is not None:
            tanh_grad *= valid
        return {"tanh_grad": tanh_grad, "h_carry": self._carry(valid)}

    def step_backward(self, xp, s, dh, d_extra, factors, dpre_x, dpre_h):
        xp.multiply(dh, factors["tanh_grad"][s], out=dpre_x[..., 0, :])
        carry = factors["h_carry"]
        return None if carry is None else dh * carry[s]


class LSTMMath(CellMath):
    """LSTM, gates i, f, g, o (PyTorch's order):
    c' = f * c + i * g,  h' = o * tanh(c').
    """

    name = "lstm"
    gate_count = 4
    state_count = 2
    gate_scale = (0.5, 0.5, 1.0, 0.5)

    def workspace(self, xp, time_size, lead, batch, hidden_size, dtype):
        H = hidden_size
        scale = np.repeat(np.asarray(self.gate_scale), H)
        return {
            "tanh_to_gate_scale": xp.asarray(scale, dtype=dtype),
            "tanh_to_gate_offset": xp.asarray(np.where(scale == 1.0, 0.0, 0.5), dtype=dtype),
            "gates": xp.empty((time_size, *lead, batch, 4 * H), dtype=dtype),  # activated
            "tanh_c": xp.empty((time_size, *lead, batch, H), dtype=dtype),
            "scratch": xp.empty((*lead, batch, H), dtype=dtype),
        }

    def step(self, xp, s, pre_x, prev, new, project_hidden, step_bias, saved):
        H = prev[0].shape[-1]
        gates = saved["gates"][s]
        project_hidden(prev[0], gates)
        gates += pre_x
        xp.tanh(gates, out=gates)
        # i, f, o came in halved: 0.5 * tanh + 0.5 makes them sigmoids; g stays tanh.
        gates *= saved["tanh_to_gate_scale"]
        gates += saved["tanh_to_gate_offset"]
        i, f, g, o = _blocks(gates, H, 4)
        h, c = new
        ig = saved["scratch"]
        xp.multiply(f, prev[1], out=c)
        xp.multiply(i, g, out=ig)
        c += ig
        tanh_c = saved["tanh_c"][s]
        xp.tanh(c, out=tanh_c)
        xp.multiply(o, tanh_c, out=h)

    def backward_factors(self, xp, saved, entering, leaving, valid):
        gates, tanh_c, c_prev = saved["gates"], saved["tanh_c"], entering[1]
        H = tanh_c.shape[-1]
        i, f, g, o = _blocks(gates, H, 4)
        # dc_total = dc + dh * o * (1 - tanh(c')^2); then
        # d(a_i, a_f, a_g) = dc_total * gate_factor[:3], d(a_o) = dh * gate_factor[3].
        # In place (out=), and over all four gates at once where the layout allows:
        # passes over a gate block are strided, over the whole buffer contiguous.
        dc_from_h = _one_minus_square(xp, tanh_c, xp.empty_like(tanh_c))
        dc_from_h *= o
        gate_factor = xp.subtract(1, gates)
        gate_factor *= gates  # sigmoid' = gate * (1 - gate); wrong for g, redone below
        gate_factor = gate_factor.reshape(gates.shape[:-1] + (4, H))
        _one_minus_square(xp, g, gate_factor[..., 2, :])  # tanh' = 1 - g^2
        for k, other in ((0, g), (1, c_prev), (2, i), (3, tanh_c)):
            gate_factor[..., k, :] *= other
        c_carry = f
        if valid is not None:
            dc_from_h *= valid
            gate_factor *= valid[..., None]
            c_carry = f * valid + (1 - valid)
        return {
            "dc_from_h": dc_from_h,
            "gate_factor": gate_factor,
            "c_carry": c_carry,
            "h_carry": self._carry(valid),
            "dc_total": xp.empty(dc_from_h.shape[1:], dtype=dc_from_h.dtype),
        }

    def step_backward(self, xp, s, dh, d_extra, factors, dpre_x, dpre_h):
        dc = d_extra[0]
        dc_total = factors["dc_total"]
        xp.multiply(dh, factors["dc_from_h"][s], out=dc_total)
        dc_total += dc
        gate_factor = factors["gate_factor"][s]  # (*lead, N, 4, H)
        xp.multiply(gate_factor[..., :3, :], dc_total[..., None, :], out=dpre_x[..., :3, :])
        xp.multiply(gate_factor[..., 3, :], dh, out=dpre_x[..., 3, :])
        xp.multiply(dc_total, factors["c_carry"][s], out=dc)
        carry = factors["h_carry"]
        return None if carry is None else dh * carry[s]


class GRUMath(CellMath):
    """GRU, gates r, z, n (PyTorch's order, reset applied after the hidden matmul):
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h.
    """

    name = "gru"
    gate_count = 3
    gate_scale = (0.5, 0.5, 1.0)
    shares_gate_grads = False  # the n gate's hidden part is multiplied by r

    def split_bias(self, b_ih, b_hh):
        H = b_ih.shape[-1] // 3
        input_bias = b_ih.copy()
        input_bias[..., : 2 * H] += b_hh[..., : 2 * H]
        return input_bias, b_hh[..., None, 2 * H :]  # b_hn stays inside r * (...)

    def workspace(self, xp, time_size, lead, batch, hidden_size, dtype):
        shape = (time_size, *lead, batch, 3 * hidden_size)
        return {
            "gates": xp.empty(shape, dtype=dtype),  # r, z, n after the nonlinearities
            "hidden": xp.empty(shape, dtype=dtype),  # W_hh h (+ b_hn on the n block)
        }

    def step(self, xp, s, pre_x, prev, new, project_hidden, step_bias, saved):
        H = prev[0].shape[-1]
        hidden = saved["hidden"][s]
        project_hidden(prev[0], hidden)
        hidden_n = hidden[..., 2 * H :]
        hidden_n += step_bias
        gates = saved["gates"][s]
        rz = gates[..., : 2 * H]
        xp.add(pre_x[..., : 2 * H], hidden[..., : 2 * H], out=rz)
        _sigmoid_from_half_tanh(xp, rz)
        r, z, n = _blocks(gates, H, 3)
        xp.multiply(r, hidden_n, out=n)
        n += pre_x[..., 2 * H :]
        xp.tanh(n, out=n)
        h = new[0]
        xp.subtract(prev[0], n, out=h)
        h *= z
        h += n

    def backward_factors(self, xp, saved, entering, leaving, valid):
        gates, h_prev = saved["gates"], entering[0]
        H = h_prev.shape[-1]
        r, z, n = _blocks(gates, H, 3)
        hidden_n = saved["hidden"][..., 2 * H :]
        # d(pre_x) = dh * input_factor; d(pre_h) = dh * hidden_factor (n block times r).
        # Written in place (out=): one (T, N, H) temporary.
        input_factor = xp.empty(gates.shape[:-1] + (3, H), dtype=gates.dtype)
        d_ar, d_az, d_an = (input_factor[..., k, :] for k in range(3))
        scratch = xp.subtract(1, z)
        _one_minus_square(xp, n, d_an)
        d_an *= scratch  # d(a_n)/dh' = (1 - z) * (1 - n^2)
        xp.subtract(1, r, out=d_ar)
        d_ar *= r
        d_ar *= hidden_n
        d_ar *= d_an  # d(a_r)/dh' = r' * (W_hn h + b_hn) * d(a_n)/dh'
        xp.subtract(h_prev, n, out=scratch)
        xp.subtract(1, z, out=d_az)
        d_az *= z
        d_az *= scratch  # d(a_z)/dh' = z' * (h - n)
        hidden_factor = input_factor.copy()
        hidden_factor[..., 2, :] *= r
        h_carry = z
        if valid is not None:
            input_factor *= valid[..., None]
            hidden_factor *= valid[..., None]
            h_carry = z * valid + (1 - valid)
        return {"input_factor": input_factor, "hidden_factor": hidden_factor, "h_carry": h_carry}

    def step_backward(self, xp, s, dh, d_extra, factors, dpre_x, dpre_h):
        dh3 = dh[..., None, :]  # the same dh scales all three gates
        xp.multiply(factors["input_factor"][s], dh3, out=dpre_x)
        xp.multiply(factors["hidden_factor"][s], dh3, out=dpre_h)
        return dh * factors["h_carry"][s]


CELL_MATH: dict[str, CellMath] = {m.name: m for m in (RNNMath(), LSTMMath(), GRUMath())}
