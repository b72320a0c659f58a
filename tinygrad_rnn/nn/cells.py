"""Per-step math of the recurrent cells: RNN (tanh or relu), LSTM and GRU.

Each cell is a small class that knows its gates and two things only: how one
time step turns gate pre-activations into the new state (`forward_step`), and
how the gradient of a step's new state goes back to its gate pre-activations
(`backward_factors` for everything that can be computed for all steps at
once, then `backward_step` inside the time loop). The sequence driver in
`recurrent.py` owns the rest: the time loop, the matmuls, directions,
stacking and padding. The cell modules (`LSTMCell`, ...) run that same driver
with T = 1, so these equations exist once.

Layout (why it is fast): arrays are feature-major, `(..., F, N)` with the
batch last, so each gate of a step is one contiguous `(H, N)` block and every
elementwise op below runs over contiguous memory. Per-call buffers are
step-major, `buffer[s]`. A bidirectional layer runs both directions in the
same call, its arrays carrying a direction axis after the step axis; written
`lead` below, lead = () for one direction and (2,) for two. Shapes: per-step
gates (*lead, G*H, N), states (*lead, H, N); per-call buffers (T, *lead, ...).

Gates are stored in the cell's own order (`gate_order`, sigmoid gates first),
and the driver multiplies the sigmoid gates' weight rows by 0.5 once per call,
so all gates of a step cost one tanh: sigmoid(a) = 0.5 * tanh(a / 2) + 0.5,
which never overflows. The cells therefore see z = a / 2 for sigmoid gates and
z = a otherwise, and their backward returns gradients with respect to z
(d sigmoid / dz = 2 s (1 - s)), which the driver multiplies by the same halved
weights, then halves the weight gradients' sigmoid rows. Halving and doubling
are exact in floating point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..workspace import Workspace

__all__ = ["CellMath", "RNNMath", "LSTMMath", "GRUMath", "CELL_MATH"]

# step(s): run step s in place, reading and writing the per-call buffers.
ForwardStep = Callable[[int], None]
# step(s, dh) -> the part of the previous h's gradient that bypasses W_hh, or None.
BackwardStep = Callable[[int, Any], Any]


class CellMath:
    """The per-step equations of one cell type; stateless, one instance per type.

    Subclasses set `name`, `gate_count` (G), `state_count` (1 for h, 2 for
    (h, c)), `gate_order` (PyTorch's index of each stored gate), `sigmoid_gates`
    (how many stored gates, from the first, are sigmoids) and
    `shares_gate_grads` (True when the gradient of the input pre-activations
    equals that of the hidden ones, so the driver may fold the input into the
    hidden matmul and keeps one gradient buffer).
    """

    name: str = ""
    gate_count: int = 1
    state_count: int = 1
    gate_order: tuple[int, ...] = (0,)
    sigmoid_gates: int = 0
    shares_gate_grads: bool = True

    def gate_scales(self) -> tuple[float, ...]:
        """Per stored gate: 0.5 for a sigmoid (evaluated as a tanh of half), else 1."""
        return tuple(0.5 if k < self.sigmoid_gates else 1.0 for k in range(self.gate_count))

    def forward_buffers(
        self,
        ws: Workspace,
        time_size: int,
        lead: tuple[int, ...],
        hidden_size: int,
        batch: int,
        dtype: Any,
    ) -> dict[str, Any]:
        """Buffers a forward call fills and its backward reads, from the call's workspace.

        "projection" (T, *lead, G*H, N) is where the driver writes each step's
        hidden matmul W_hh h + b (plus W_ih x when it folds the input in).
        """
        raise NotImplementedError

    def forward_step(
        self, xp: Any, buffers: dict[str, Any], states: Sequence[Any], pre_x: Any
    ) -> ForwardStep:
        """A function running step `s`: reads `buffers["projection"][s]` (and `pre_x[s]`,
        the input projection, unless the driver folded it in: None), writes each
        state's `[s + 1]` from its `[s]`. states: per state, `(T + 1, *lead, H, N)` views."""
        raise NotImplementedError

    def backward_factors(
        self,
        xp: Any,
        ws: Workspace,
        buffers: dict[str, Any],
        states: Sequence[Any],
        valid: Any,
        steps: slice,
    ) -> dict[str, Any]:
        """Everything `backward_step` needs that does not depend on the incoming gradient.

        Returns per-call arrays (T, ...) whose `steps` entries it has just filled: the
        driver asks for a chunk of steps at a time, right before their backward, so the
        chunk is still in cache when the time loop reads it.
        states: per state, (T + 1, *lead, H, N). valid: (T, *lead, 1, N) 1.0 at real
        steps, 0.0 at padded ones, or None; it is folded in here so padded steps pass
        their state gradient straight through.
        """
        raise NotImplementedError

    def backward_step(
        self,
        xp: Any,
        ws: Workspace,
        factors: dict[str, Any],
        d_extra: Sequence[Any],
        d_pre_x: Any,
        d_pre_h: Any,
    ) -> BackwardStep:
        """A function turning the gradient dh (*lead, H, N) of step s's new h into
        the step's gate gradients, written to d_pre_x[s] and d_pre_h[s] ((T, *lead,
        G*H, N); the same array when `shares_gate_grads`). d_extra: gradients of the
        other states (LSTM: [dc]), updated in place to those of the previous states.
        It returns the part of the previous h's gradient that does not go through
        W_hh (or None); the driver adds d_pre_h[s] @ W_hh."""
        raise NotImplementedError

    @staticmethod
    def _carry(xp: Any, ws: Workspace, name: str, keep: Any, valid: Any, steps: slice) -> Any:
        """(T, ...) factor that carries a state gradient back through a step: `keep` at
        real steps, 1 at padded ones (None, and `keep` itself, when nothing is padded)."""
        if valid is None:
            return keep
        if keep is None:
            carry = ws.empty(name, valid.shape, valid.dtype)
            xp.subtract(1, valid[steps], out=carry[steps])
            return carry
        carry = ws.empty(name, keep.shape, keep.dtype)
        chunk = carry[steps]
        xp.subtract(keep[steps], 1, out=chunk)
        chunk *= valid[steps]
        chunk += 1  # keep * valid + (1 - valid)
        return carry


def _blocks(gates: Any, H: int, count: int) -> list[Any]:
    """The gates' blocks along the feature axis, as views: (..., G*H, N) -> G x (..., H, N)."""
    return [gates[..., k * H : (k + 1) * H, :] for k in range(count)]


def _split_gates(gates: Any, count: int) -> Any:
    """(..., G*H, N) -> (..., G, H, N), a view (the buffers are C-contiguous)."""
    *outer, GH, N = gates.shape
    return gates.reshape(*outer, count, GH // count, N)


def _one_minus_square(xp: Any, a: Any, out: Any) -> Any:
    """out = 1 - a * a (tanh's derivative from its output), without temporaries."""
    xp.multiply(a, a, out=out)
    xp.subtract(1, out, out=out)
    return out


def _sigmoid_slope(xp: Any, s: Any, out: Any) -> Any:
    """out = d s / d z = 2 s (1 - s) for s = sigmoid(2 z), without temporaries."""
    xp.subtract(1, s, out=out)
    out *= s
    out *= 2
    return out


def _sigmoid_from_half_tanh(z: Any) -> None:
    """In place: z holds tanh(a / 2); afterwards sigmoid(a)."""
    z *= 0.5
    z += 0.5


class RNNMath(CellMath):
    """Elman RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act tanh (default) or relu.

    Both activations' derivatives come from the output alone: 1 - h'^2 for tanh,
    [h' > 0] for relu (0 at 0, as PyTorch takes it), so backward keeps only h'.
    """

    NONLINEARITIES = ("tanh", "relu")

    def __init__(self, nonlinearity: str = "tanh"):
        if nonlinearity not in self.NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {self.NONLINEARITIES}; got {nonlinearity!r}"
            )
        self.nonlinearity = nonlinearity
        # The name keys the workspaces and the cell lookup: the two must not share them.
        self.name = "rnn" if nonlinearity == "tanh" else f"rnn_{nonlinearity}"

    def forward_buffers(self, ws, time_size, lead, hidden_size, batch, dtype):
        return {"projection": ws.empty("gates", (time_size, *lead, hidden_size, batch), dtype)}

    def forward_step(self, xp, buffers, states, pre_x):
        projection, h = buffers["projection"], states[0]
        relu = self.nonlinearity == "relu"
        tanh, maximum = xp.tanh, xp.maximum

        def step(s: int) -> None:
            a = projection[s]
            if pre_x is not None:
                a += pre_x[s]
            if relu:
                maximum(a, 0, out=h[s + 1])
            else:
                tanh(a, out=h[s + 1])

        return step

    def backward_factors(self, xp, ws, buffers, states, valid, steps):
        leaving = states[0][1:]
        slope = ws.empty("activation_slope", leaving.shape, leaving.dtype)
        if self.nonlinearity == "relu":
            xp.sign(leaving[steps], out=slope[steps])  # h' >= 0, so 1.0 or 0.0, in h's dtype
        else:
            _one_minus_square(xp, leaving[steps], slope[steps])
        if valid is not None:
            slope[steps] *= valid[steps]
        h_carry = self._carry(xp, ws, "h_carry", None, valid, steps)
        return {"activation_slope": slope, "h_carry": h_carry}

    def backward_step(self, xp, ws, factors, d_extra, d_pre_x, d_pre_h):
        slope, h_carry = factors["activation_slope"], factors["h_carry"]
        multiply = xp.multiply

        def step(s: int, dh: Any) -> Any:
            multiply(dh, slope[s], out=d_pre_x[s])
            return None if h_carry is None else dh * h_carry[s]

        return step


class LSTMMath(CellMath):
    """LSTM, gates i, f, g, o (PyTorch's order):
    c' = f * c + i * g,  h' = o * tanh(c').

    Stored as o, f, i, g: the sigmoids o, f, i form one block (one in-place
    affine per step); f, i, g, whose gradients all scale with dc, another; and
    i, g sit side by side, each the other's factor in c'.
    """

    name = "lstm"
    gate_count = 4
    state_count = 2
    gate_order = (3, 1, 0, 2)
    sigmoid_gates = 3

    def forward_buffers(self, ws, time_size, lead, hidden_size, batch, dtype):
        H, N = hidden_size, batch
        return {
            "projection": ws.empty("gates", (time_size, *lead, 4 * H, N), dtype),  # then gates
            "tanh_c": ws.empty("tanh_c", (time_size, *lead, H, N), dtype),
            "product": ws.empty("product", (*lead, H, N), dtype),
        }

    def forward_step(self, xp, buffers, states, pre_x):
        gates, tanh_c, product = buffers["projection"], buffers["tanh_c"], buffers["product"]
        H = tanh_c.shape[-2]
        sigmoids = gates[..., : 3 * H, :]
        o, f, i, g = _blocks(gates, H, 4)
        h, c = states
        tanh, multiply = xp.tanh, xp.multiply

        # Each step's views, made once: on small shapes indexing costs as much as the math.
        views = [
            (gates[s], sigmoids[s], f[s], c[s], c[s + 1], i[s], g[s], tanh_c[s], o[s], h[s + 1])
            for s in range(len(gates))
        ]

        # Per step: one tanh for the four gates, the sigmoids' affine, then c' and h'.
        # `out` is passed positionally: a keyword costs more than the smaller ops.
        def step(s: int) -> None:
            z, sigmoid, f_s, c_prev, c_new, i_s, g_s, tanh_c_new, o_s, h_new = views[s]
            if pre_x is not None:
                z += pre_x[s]
            tanh(z, z)
            sigmoid *= 0.5
            sigmoid += 0.5
            multiply(f_s, c_prev, c_new)
            multiply(i_s, g_s, product)
            c_new += product
            tanh(c_new, tanh_c_new)
            multiply(o_s, tanh_c_new, h_new)

        return step

    def backward_factors(self, xp, ws, buffers, states, valid, steps):
        gates, tanh_c = buffers["projection"], buffers["tanh_c"]
        H = tanh_c.shape[-2]
        factor = ws.empty("factor", gates.shape, gates.dtype)
        dc_from_h = ws.empty("dc_from_h", tanh_c.shape, tanh_c.dtype)
        c_carry = self._carry(xp, ws, "c_carry", _blocks(gates, H, 4)[1], valid, steps)
        h_carry = self._carry(xp, ws, "h_carry", None, valid, steps)

        # This chunk: dc_total = dc + dh * o * (1 - tanh(c')^2); then, with respect to
        # the (halved) pre-activations z, dz_o = dh * factor_o, dz_{f,i,g} = dc_total *
        # factor_{f,i,g}, with the sigmoids' slopes 2 s (1 - s):
        #   factor_o = 2 o (1 - o) tanh(c') = 2 (1 - o) h'   factor_f = 2 f (1 - f) c
        #   factor_i = 2 i (1 - i) g                          factor_g = (1 - g^2) i
        gates, tanh_c = gates[steps], tanh_c[steps]
        h_new, c_prev = states[0][1:][steps], states[1][:-1][steps]
        o, f, i, g = _blocks(gates, H, 4)
        chunk = xp.multiply(h_new, tanh_c, dc_from_h[steps])
        xp.subtract(o, chunk, chunk)  # o - h' tanh(c') = o (1 - tanh(c')^2)
        slopes = xp.subtract(1, gates, factor[steps])  # 1 - gate, all four at once
        factor_o, factor_f, factor_i, factor_g = _blocks(slopes, H, 4)
        factor_o *= h_new
        slopes[..., H : 3 * H, :] *= gates[..., H : 3 * H, :]  # f (1 - f), i (1 - i)
        slopes[..., : 3 * H, :] *= 2
        factor_f *= c_prev
        _one_minus_square(xp, g, factor_g)
        # i and g are each the other's factor: one pass over both, g and i swapped.
        _split_gates(slopes, 4)[..., 2:, :, :] *= _split_gates(gates, 4)[..., 3:1:-1, :, :]
        if valid is not None:
            chunk *= valid[steps]
            slopes *= valid[steps]
        return {"dc_from_h": dc_from_h, "factor": factor, "c_carry": c_carry, "h_carry": h_carry}

    def backward_step(self, xp, ws, factors, d_extra, d_pre_x, d_pre_h):
        dc = d_extra[0]
        dc_from_h, c_carry, h_carry = factors["dc_from_h"], factors["c_carry"], factors["h_carry"]
        factor = _split_gates(factors["factor"], 4)  # (T, *lead, 4, H, N)
        factor_o, factor_fig = factor[..., 0, :, :], factor[..., 1:, :, :]
        d_gates = _split_gates(d_pre_x, 4)
        d_o, d_fig = d_gates[..., 0, :, :], d_gates[..., 1:, :, :]
        dc_total = ws.empty("dc_total", dc.shape, dc.dtype)
        dc_total_per_gate = dc_total[..., None, :, :]  # broadcasts over f, i, g
        multiply = xp.multiply
        views = [
            (dc_from_h[s], factor_fig[s], d_fig[s], factor_o[s], d_o[s], c_carry[s])
            for s in range(len(dc_from_h))
        ]

        def step(s: int, dh: Any) -> Any:
            dc_from_h_s, factor_fig_s, d_fig_s, factor_o_s, d_o_s, c_carry_s = views[s]
            total = multiply(dh, dc_from_h_s, dc_total)
            total += dc
            multiply(factor_fig_s, dc_total_per_gate, d_fig_s)
            multiply(factor_o_s, dh, d_o_s)
            multiply(total, c_carry_s, dc)
            return None if h_carry is None else dh * h_carry[s]

        return step


class GRUMath(CellMath):
    """GRU, gates r, z, n (PyTorch's order, reset applied after the hidden matmul):
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h.
    """

    name = "gru"
    gate_count = 3
    gate_order = (0, 1, 2)
    sigmoid_gates = 2
    shares_gate_grads = False  # the n gate's hidden part is multiplied by r

    def forward_buffers(self, ws, time_size, lead, hidden_size, batch, dtype):
        shape = (time_size, *lead, 3 * hidden_size, batch)
        return {
            "projection": ws.empty("hidden", shape, dtype),  # W_hh h + b_hh
            "gates": ws.empty("gates", shape, dtype),  # r, z, n after the nonlinearities
        }

    def forward_step(self, xp, buffers, states, pre_x):
        hidden, gates = buffers["projection"], buffers["gates"]
        H = gates.shape[-2] // 3
        rz, hidden_rz, pre_x_rz = (a[..., : 2 * H, :] for a in (gates, hidden, pre_x))
        r, z, n = _blocks(gates, H, 3)
        hidden_n, pre_x_n = hidden[..., 2 * H :, :], pre_x[..., 2 * H :, :]
        h = states[0]
        tanh, add, multiply, subtract = xp.tanh, xp.add, xp.multiply, xp.subtract

        def step(s: int) -> None:
            rz_s = rz[s]
            add(pre_x_rz[s], hidden_rz[s], out=rz_s)
            tanh(rz_s, out=rz_s)
            _sigmoid_from_half_tanh(rz_s)
            n_s = n[s]
            multiply(r[s], hidden_n[s], out=n_s)
            n_s += pre_x_n[s]
            tanh(n_s, out=n_s)
            h_new = h[s + 1]
            subtract(h[s], n_s, out=h_new)
            h_new *= z[s]
            h_new += n_s

        return step

    def backward_factors(self, xp, ws, buffers, states, valid, steps):
        gates = buffers["gates"]
        H = gates.shape[-2] // 3
        input_factor = ws.empty("input_factor", gates.shape, gates.dtype)
        hidden_factor = ws.empty("hidden_factor", gates.shape, gates.dtype)
        z_all = _blocks(gates, H, 3)[1]
        h_carry = self._carry(xp, ws, "h_carry", z_all, valid, steps)

        # This chunk: d(pre_x) = dh * input_factor; d(pre_h) = dh * hidden_factor
        # (its n block times r).
        gates, h_prev = gates[steps], states[0][:-1][steps]
        hidden_n = buffers["projection"][steps][..., 2 * H :, :]
        r, z, n = _blocks(gates, H, 3)
        d_r, d_z, d_n = _blocks(input_factor[steps], H, 3)
        scratch = xp.subtract(1, z, out=ws.empty("scratch", z.shape, z.dtype))
        _one_minus_square(xp, n, d_n)
        d_n *= scratch  # d(a_n)/dh' = (1 - z) * (1 - n^2)
        _sigmoid_slope(xp, r, d_r)
        d_r *= hidden_n
        d_r *= d_n  # d(z_r)/dh' = r' * (W_hn h + b_hn) * d(a_n)/dh'
        xp.subtract(h_prev, n, out=scratch)
        _sigmoid_slope(xp, z, d_z)
        d_z *= scratch  # d(z_z)/dh' = z' * (h - n)
        hidden_chunk = hidden_factor[steps]
        hidden_chunk[...] = input_factor[steps]
        hidden_chunk[..., 2 * H :, :] *= r
        if valid is not None:
            input_factor[steps] *= valid[steps]
            hidden_chunk *= valid[steps]
        return {"input_factor": input_factor, "hidden_factor": hidden_factor, "h_carry": h_carry}

    def backward_step(self, xp, ws, factors, d_extra, d_pre_x, d_pre_h):
        input_factor = _split_gates(factors["input_factor"], 3)
        hidden_factor = _split_gates(factors["hidden_factor"], 3)
        d_x, d_h = _split_gates(d_pre_x, 3), _split_gates(d_pre_h, 3)
        h_carry = factors["h_carry"]
        multiply = xp.multiply

        def step(s: int, dh: Any) -> Any:
            dh_per_gate = dh[..., None, :, :]  # the same dh scales all three gates
            multiply(input_factor[s], dh_per_gate, out=d_x[s])
            multiply(hidden_factor[s], dh_per_gate, out=d_h[s])
            return dh * h_carry[s]

        return step


CELL_MATH: dict[str, CellMath] = {
    m.name: m for m in (RNNMath(), RNNMath("relu"), LSTMMath(), GRUMath())
}
