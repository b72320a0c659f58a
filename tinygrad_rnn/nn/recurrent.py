"""Fused recurrent layers (RNN, LSTM, GRU), their one-step cells, and the shared driver.

One layer's whole sequence, both directions included, is ONE tape entry: the
time loop runs inside its forward and inside its hand-written backward. Per
call, the input projections of all steps are one matmul per direction (or,
for a narrow input, part of the step matmul), each step computes all its
gates with one matmul whose weights carry the biases, and after the backward
loop the weight, bias and input gradients are one matmul each over all T*N
rows. Scratch buffers are pooled across calls (`tinygrad_rnn.workspace`).
The per-step equations come from `cells.py`; this module is the driver they
share and the Modules built on it.

State layout (PyTorch's): h, and c for the LSTM, are (L * dirs, N, H), rows
ordered layer by layer, the forward direction before the reverse one.
Padding: with `lengths`, steps at or after a row's length leave its state
unchanged and output zeros, so a padded batch needs no sorting; the reverse
direction starts at each row's last valid step, as PyTorch's packed sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import ops, threads
from ..backend import get_array_module, get_backend
from ..random import default_generator
from ..tensor import Tensor, check_same_backend, record
from ..workspace import POOL
from .cells import CELL_MATH, CellMath, RNNMath
from .module import Module, Parameter

__all__ = [
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "recurrent_sequence", "fused_layer",
]  # fmt: skip

State = Tensor | tuple[Tensor, Tensor]


# ---- padding ---------------------------------------------------------------------
class _Padding:
    """Per-step masks built once per call on the data's backend, shared by all layers.

    valid: (dirs, T, 1, N) 1.0 where the step is real, in each direction's step order
    (the reverse direction walks time backwards). keep: its boolean complement.
    """

    __slots__ = ("valid", "keep")

    def __init__(self, lengths: np.ndarray, dirs: int, time_size: int, xp: Any, dtype: Any):
        steps = np.arange(time_size)[:, None]
        valid = [steps < lengths[None, :]]  # forward: step s is time s
        if dirs == 2:
            valid.append(time_size - 1 - steps < lengths[None, :])  # reverse: time T-1-s
        host = np.stack(valid)[:, :, None, :]  # (dirs, T, 1, N)
        self.valid = xp.asarray(host, dtype=dtype)
        self.keep = xp.asarray(~host)


def _host_lengths(owner: str, lengths: Any, batch: int, time_size: int) -> np.ndarray | None:
    """Checked lengths as a host int array, or None when every row is full."""
    if lengths is None:
        return None
    if isinstance(lengths, Tensor):
        lengths = lengths.numpy()
    elif hasattr(lengths, "get"):  # a CuPy array: one copy, before any time loop
        lengths = lengths.get()
    host = np.asarray(lengths)
    if host.ndim != 1 or host.shape[0] != batch:
        raise ValueError(
            f"{owner}: lengths must be a sequence of N={batch} ints (one per batch row); "
            f"got shape {host.shape}"
        )
    if host.size and host.dtype.kind not in "iu":
        raise TypeError(f"{owner}: lengths must be integers; got dtype {host.dtype}")
    bad = np.flatnonzero((host < 0) | (host > time_size))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{owner}: lengths[{i}]={int(host[i])} is out of range; expected "
            f"0 <= length <= T={time_size}"
        )
    host = host.astype(np.int64)
    return None if bool((host == time_size).all()) else host


# ---- the fused layer: one tape entry per layer per call ---------------------------
class _SequenceRun:
    """What a layer's forward leaves for `final_state` and for its own backward.

    final: per state, (dirs, N, H) after the last step. final_grads: filled by the
    final-state entries' backward, which runs before the layer's (it was recorded
    later). no_output_grad: the zero gradient a final-state entry sends to the
    layer's output, recognised by identity so the loop skips adding it.
    """

    __slots__ = ("final", "final_grads", "no_output_grad")

    def __init__(self, final: list[Any]):
        self.final = final
        self.final_grads: list[Any] = [None] * len(final)
        self.no_output_grad: Any = None


def _by_step(buffer: Any) -> Any:
    """View a (dirs, T, ...) buffer step-major: (T, ...) for one direction, else (T, dirs, ...)."""
    return buffer[0] if buffer.shape[0] == 1 else buffer.swapaxes(0, 1)


# Bytes of gate buffers per chunk of backward steps: what stays in a core's 2 MiB L2.
_CHUNK_BYTES = 1024 * 1024
# Batch size from which per-step rows of N elements are long enough to write strided.
_LONG_ROW = 64


def _folds_input(cell: CellMath, time_size: int, input_size: int, hidden_size: int) -> bool:
    """Whether the step matmul also does the input projection, W [h; x; 1].

    That saves the separate input matmul and a per-step add; it pays when x is
    narrow next to h (a sine value, a small embedding) or there is one step.
    A wide x is better projected for all steps in one big matmul.
    """
    return cell.shares_gate_grads and (time_size == 1 or 4 * input_size <= hidden_size)


# Below this many elements a weight is reordered with one gather, above it gate by gate
# (no temporary): for a small model the Python loop would cost more than the copy.
_SMALL_WEIGHT = 1 << 16
_GATE_INDEX: dict[tuple[int, str], tuple[Any, Any]] = {}


def _gate_index(xp: Any, cell: CellMath) -> tuple[Any, Any]:
    """(PyTorch's index of each stored gate, each stored gate's scale), on `xp`."""
    key = (id(xp), cell.name)
    if key not in _GATE_INDEX:
        _GATE_INDEX[key] = (
            xp.asarray(np.asarray(cell.gate_order)),
            xp.asarray(np.asarray(cell.gate_scales())),
        )
    return _GATE_INDEX[key]


def _gate_rows(xp: Any, cell: CellMath, matrices: Sequence[Any], out: Any) -> None:
    """out[k-th stored gate's rows] = sum(matrices)[PyTorch's rows] * that gate's scale.

    matrices: (G*H, C) weights (or (G*H,) biases, for out of shape (G*H,)) in
    PyTorch's gate order.
    """
    G = cell.gate_count
    H = matrices[0].shape[0] // G
    if out.size <= _SMALL_WEIGHT:
        order, scales = _gate_index(xp, cell)
        source = matrices[0] if len(matrices) == 1 else matrices[0] + matrices[1]
        by_gate = (G, H, *source.shape[1:])
        scales = scales.reshape((G,) + (1,) * (len(by_gate) - 1)).astype(out.dtype)
        xp.multiply(source.reshape(by_gate)[order], scales, out=out.reshape(by_gate))
        return
    for k, (source, scale) in enumerate(zip(cell.gate_order, cell.gate_scales())):
        target = out[k * H : (k + 1) * H]
        block = [m[source * H : (source + 1) * H] for m in matrices]
        if len(block) == 2:
            xp.add(block[0], block[1], out=target)
            block = [target]
        xp.multiply(block[0], scale, out=target)


def _pytorch_rows(xp: Any, cell: CellMath, grad: Any) -> Any:
    """The inverse of `_gate_rows` for a gradient: stored gate order and the halved
    rows of (G*H, ...) `grad` back to PyTorch's parameter. A new C-contiguous array."""
    G = cell.gate_count
    H = grad.shape[0] // G
    out = xp.empty(grad.shape, dtype=grad.dtype)
    if grad.size <= _SMALL_WEIGHT:
        order, scales = _gate_index(xp, cell)
        by_gate = (G, H, *grad.shape[1:])
        scales = scales.reshape((G,) + (1,) * (len(by_gate) - 1)).astype(grad.dtype)
        out.reshape(by_gate)[order] = grad.reshape(by_gate) * scales
        return out
    for k, (source, scale) in enumerate(zip(cell.gate_order, cell.gate_scales())):
        xp.multiply(grad[k * H : (k + 1) * H], scale, out=out[source * H : (source + 1) * H])
    return out


def fused_layer(
    cell: CellMath,
    x: Tensor,
    weights: Sequence[Tensor],
    state: Sequence[Tensor] = (),
    state_rows: slice = slice(None),
    padding: _Padding | None = None,
    out_shape: tuple[int, ...] | None = None,
) -> tuple[Tensor, _SequenceRun]:
    """One layer over the whole sequence, recorded as one tape entry.

    x: (N, T, D), or (N, D) for a single step. weights: per direction
    [weight_ih (G*H, D), weight_hh (G*H, H), bias_ih (G*H,), bias_hh (G*H,)],
    forward first. state: empty (zeros) or one Tensor per state (h, then c);
    rows `state_rows` of its (-1, N, H) view are this layer's (dirs, N, H)
    initial state. Inputs are trusted (the callers check them).
    Returns out (N, T, dirs * H) (or `out_shape`) and the run for `final_state`.

    Inside, everything is feature-major, (..., F, N) (see cells.py), in buffers
    stored (dirs, T, ...) so each direction's slice is contiguous for the big
    matmuls, and handed to the cell step-major (`_by_step`). Each step multiplies
    the stacked rows [h; 1] (or [h; x; 1], see `_folds_input`) by one weight
    matrix prepared once per call, biases included. The reverse direction works
    on the time-reversed sequence, so both walk steps 0..T-1. Scratch arrays come
    from a pooled workspace (see workspace.py), given back after the backward.
    """
    xp = get_array_module(x.data)
    check_same_backend(
        f"{cell.name} layer", x.data, *(w.data for w in weights), *(st.data for st in state)
    )
    x_data = x.data if x.ndim == 3 else x.data[:, None, :]
    N, T, D = x_data.shape
    dirs = len(weights) // 4
    lead = () if dirs == 1 else (dirs,)
    GH, H = weights[1].shape
    dtype = x_data.dtype
    folds_input = _folds_input(cell, T, D, H)
    K = H + (D if folds_input else 0) + 1  # rows of [h; (x;) 1]
    ws = POOL.take((cell.name, dirs, N, T, D, H, dtype.str), xp)

    # The weights in the cell's gate order with sigmoid rows halved, biases as the last
    # column; forward and backward both multiply by these (transposed in backward).
    w_hidden = ws.empty("w_hidden", (dirs, GH, K), dtype)
    w_input = None if folds_input else ws.empty("w_input", (dirs, GH, D + 1), dtype)
    for d in range(dirs):
        w_ih, w_hh, b_ih, b_hh = (w.data for w in weights[4 * d : 4 * d + 4])
        _gate_rows(xp, cell, [w_hh], w_hidden[d, :, :H])
        if folds_input:
            _gate_rows(xp, cell, [w_ih], w_hidden[d, :, H : H + D])
            _gate_rows(xp, cell, [b_ih, b_hh], w_hidden[d, :, K - 1])
        else:
            _gate_rows(xp, cell, [b_hh], w_hidden[d, :, K - 1])
            _gate_rows(xp, cell, [w_ih], w_input[d, :, :D])
            _gate_rows(xp, cell, [b_ih], w_input[d, :, D])

    # stacked[d, s] holds [h entering step s; (x of step s;) 1]: (dirs, T+1, K, N).
    stacked = ws.empty("stacked", (dirs, T + 1, K, N), dtype)
    stacked[:, :, K - 1] = 1
    x_features = x_data.transpose(2, 1, 0)  # (D, T, N)
    x_by_dir = [x_features if d == 0 else x_features[:, ::-1] for d in range(dirs)]
    inputs = None  # (dirs, D + 1, T * N): [x; 1] per step, for the input projection
    pre_x = pre_x_steps = None  # (dirs, G*H, T * N): that projection, made before the loop
    if folds_input:
        for d in range(dirs):
            stacked[d, :T, H : H + D] = x_by_dir[d].transpose(1, 0, 2)
    else:
        inputs = ws.empty("inputs", (dirs, D + 1, T, N), dtype)
        for d in range(dirs):
            inputs[d, :D] = x_by_dir[d]
        inputs[:, D] = 1
        inputs = inputs.reshape(dirs, D + 1, T * N)
        pre_x = ws.empty("pre_x", (dirs, GH, T * N), dtype)
        by_step = pre_x.reshape(dirs, GH, T, N)
        pre_x_steps = by_step[0].swapaxes(0, 1) if dirs == 1 else by_step.transpose(2, 0, 1, 3)

    extra = [ws.empty(f"state{k}", (dirs, T + 1, H, N), dtype) for k in range(1, cell.state_count)]
    for k, st in enumerate([stacked[:, :, :H], *extra]):
        if state:  # (dirs, N, H) rows of the given state, feature-major
            st[:, 0] = state[k].data.reshape(-1, N, H)[state_rows].swapaxes(1, 2)
        else:
            st[:, 0] = 0
    states = [_by_step(stacked[:, :, :H]), *(_by_step(st) for st in extra)]
    buffers = cell.forward_buffers(ws, T, lead, H, N, dtype)
    # The step function and each step's matmul operands are views over the workspace's
    # arrays: made on its first call, reused by every later call with the same shapes.
    step = ws.memo("forward_step", lambda: cell.forward_step(xp, buffers, states, pre_x_steps))
    operands = ws.memo(
        "forward_operands",
        lambda: list(zip(_by_step(stacked), buffers["projection"])),
    )
    w_step = w_hidden[0] if dirs == 1 else w_hidden
    keep = None if padding is None else _by_step(padding.keep)
    copyto = xp.copyto
    # The loop's products on BLAS's threads when they are big enough (`looped_matmul`), and
    # the input projection before it too: `threads.matmul` inside the context is one call.
    with threads.looped_matmul(xp, w_step.shape, operands[0][0].shape) as step_matmul:
        if pre_x is not None:  # all steps, one matmul per direction
            for d in range(dirs):
                threads.matmul(xp, w_input[d], inputs[d], out=pre_x[d])
        for s, (stacked_s, projection_s) in enumerate(operands):
            step_matmul(w_step, stacked_s, out=projection_s)
            step(s)
            if keep is not None:  # padded steps carry the state through unchanged
                for st in states:
                    copyto(st[s + 1], st[s], where=keep[s])

    out = xp.empty((N, T, dirs * H), dtype=dtype)  # handed out: never pooled
    # (T, H, N) -> (N, T, H) in two moves, each with a contiguous side: per-step
    # (H, N) -> (N, H) transposes, then rows of H. One strided gather is slower.
    by_row = ws.empty("by_row", (T, N, H), dtype)
    for d in range(dirs):
        leaving = stacked[d, 1:, :H]  # (T, H, N), step order
        if padding is not None:
            leaving = leaving * padding.valid[d]
        by_row[...] = (leaving if d == 0 else leaving[::-1]).swapaxes(1, 2)
        out[:, :, d * H : (d + 1) * H] = by_row.swapaxes(0, 1)
    finals = [stacked[:, T, :H], *(st[:, T] for st in extra)]  # (dirs, H, N) each
    run = _SequenceRun([f.swapaxes(1, 2).copy() for f in finals])

    def backward(g: Any) -> list[Any]:
        d_final, run.final_grads = run.final_grads, [None] * cell.state_count
        valid = None if padding is None else padding.valid
        # Gradient reaching each direction's outputs, in step order: (dirs, T, H, N).
        d_out = None
        if g is not run.no_output_grad:
            g = g.reshape(N, T, dirs * H)
            d_out = ws.empty("d_out", (dirs, T, H, N), dtype)
            by_row = ws.empty("by_row", (T, N, H), dtype)
            for d in range(dirs):  # (N, T, H) -> (T, H, N), in two moves as in forward
                by_row[...] = g[:, :, d * H : (d + 1) * H].swapaxes(0, 1)
                d_out[d] = by_row.swapaxes(1, 2) if d == 0 else by_row[::-1].swapaxes(1, 2)
            if valid is not None:
                d_out *= valid
            d_out = _by_step(d_out)

        # Gate gradients, (T, *lead, G*H, N) step-major views. With long rows (a big
        # batch) they are stored (dirs, G*H, T, N): each direction's block is then
        # already the (G*H, T*N) matrix of the weight gradient. Short rows make the
        # per-step writes slow, so those are stored (dirs, T, G*H, N) and copied once.
        rows_last = N >= _LONG_ROW
        shape = (dirs, GH, T, N) if rows_last else (dirs, T, GH, N)
        d_pre_x = ws.empty("d_pre_x", shape, dtype)
        d_pre_h = d_pre_x if cell.shares_gate_grads else ws.empty("d_pre_h", shape, dtype)
        if rows_last:
            d_pre_x_steps, d_pre_h_steps = (
                a[0].swapaxes(0, 1) if dirs == 1 else a.transpose(2, 0, 1, 3)
                for a in (d_pre_x, d_pre_h)
            )
        else:
            d_pre_x_steps, d_pre_h_steps = _by_step(d_pre_x), _by_step(d_pre_h)
        d_states = []
        for k, dg in enumerate(d_final):  # (dirs, N, H) or None -> (*lead, H, N)
            d_state = ws.empty(f"d_state{k}", (*lead, H, N), dtype)
            if dg is None:
                d_state.fill(0)
            else:
                d_state[...] = dg.reshape(*lead, N, H).swapaxes(-1, -2)
            d_states.append(d_state)
        dh, d_extra = d_states[0], d_states[1:]
        spare = ws.empty("d_state_spare", dh.shape, dtype)
        # (*lead, H, G*H): the halved W_hh^T, C-contiguous (faster per step than a view).
        w_back = ws.empty("w_back", (*lead, H, GH), dtype)
        w_back[...] = w_step[..., :H].swapaxes(-1, -2)
        step_valid = None if valid is None else _by_step(valid)
        step_back = None
        # Chunks of steps from the last, each small enough to stay in cache between
        # computing its factors and running its steps.
        chunk = max(1, _CHUNK_BYTES // (dirs * GH * max(N, 1) * dtype.itemsize))
        # The loop's products, and the all-step ones after it, on BLAS's threads (the
        # same threads for both, awake already) when the step product is big enough:
        # inside the context, `threads.matmul` is one call on them.
        with threads.looped_matmul(xp, w_back.shape, d_pre_h_steps[0].shape) as back_matmul:
            for stop in range(T, 0, -chunk):
                steps = slice(max(stop - chunk, 0), stop)
                factors = cell.backward_factors(xp, ws, buffers, states, step_valid, steps)
                if step_back is None:
                    step_back = ws.memo(
                        ("backward_step", valid is None, rows_last),
                        lambda factors=factors: cell.backward_step(
                            xp, ws, factors, d_extra, d_pre_x_steps, d_pre_h_steps
                        ),
                    )
                for s in reversed(range(steps.start, stop)):
                    if d_out is not None:
                        dh += d_out[s]
                    direct = step_back(s, dh)
                    back_matmul(w_back, d_pre_h_steps[s], out=spare)
                    if direct is not None:
                        spare += direct
                    dh, spare = spare, dh

            # All steps at once: weight, bias and input gradients, one matmul each.
            weight_grads = []
            dx_steps = None  # (T, N, D), time order
            for d in range(dirs):
                w_x = w_hidden[d, :, H : H + D] if folds_input else w_input[d, :, :D]
                grads, part = _all_step_grads(
                    xp, ws, cell, d_pre_x[d], d_pre_h[d], rows_last, stacked[d],
                    None if folds_input else inputs[d], w_x, x.requires_grad,
                )  # fmt: skip
                weight_grads += grads
                if part is not None:
                    part = part if d == 0 else part[::-1]
                    if dx_steps is None:
                        dx_steps = ws.empty("dx_steps", part.shape, dtype)
                        dx_steps[...] = part
                    else:
                        dx_steps += part
        dx = None
        if dx_steps is not None:  # handed out: a fresh array
            dx = xp.empty((N, T, D), dtype=dtype)
            dx[...] = dx_steps.swapaxes(0, 1)
            dx = dx.reshape(x.shape)

        state_grads = []
        d_initial = [dh, *d_extra]  # (*lead, H, N) each
        for k, st in enumerate(state):
            if not st.requires_grad:
                state_grads.append(None)
                continue
            full = xp.zeros(st.shape, dtype=st.dtype)
            full.reshape(-1, N, H)[state_rows] = d_initial[k].reshape(dirs, H, N).swapaxes(1, 2)
            state_grads.append(full)
        POOL.give_back(ws)  # nothing above is a view of it
        return [dx, *weight_grads, *state_grads]

    out_tensor = record(
        f"{cell.name}_sequence",
        (x, *weights, *state),
        out if out_shape is None else out.reshape(out_shape),
        backward,
    )
    if not out_tensor.requires_grad:  # nothing recorded: no backward will read it
        POOL.give_back(ws)
    return out_tensor, run


def _all_step_grads(
    xp: Any,
    ws: Any,
    cell: CellMath,
    d_pre_x: Any,
    d_pre_h: Any,
    rows_last: bool,
    stacked: Any,
    inputs: Any,
    w_x: Any,
    wants_dx: bool,
) -> tuple[list[Any], Any]:
    """One direction's parameter gradients and input gradient, from its gate gradients of
    every step: ([d weight_ih, d weight_hh, d bias_ih, d bias_hh] in PyTorch's layout,
    dx (T, N, D) in the direction's step order or None).

    d_pre_x, d_pre_h: (G*H, T, N) with `rows_last`, else (T, G*H, N) (the same array
    when the cell shares them). stacked: (T + 1, K, N), [h; (x;) 1] entering each step.
    inputs: (D + 1, T * N), [x; 1], or None when the input is folded into `stacked`.
    w_x: (G*H, D), the weights the input was multiplied by (stored order, halved rows).
    """
    T, K, N = stacked.shape[0] - 1, stacked.shape[1], stacked.shape[2]
    GH, D = w_x.shape
    H = K - 1 - (D if inputs is None else 0)
    dtype = stacked.dtype
    if rows_last:
        dz_x, dz_h = d_pre_x.reshape(GH, T * N), d_pre_h.reshape(GH, T * N)
    else:
        dz_x = ws.empty("dz_x", (GH, T, N), dtype)
        dz_x[...] = d_pre_x.swapaxes(0, 1)
        dz_x = dz_h = dz_x.reshape(GH, T * N)
        if not cell.shares_gate_grads:
            dz_h = ws.empty("dz_h", (GH, T, N), dtype)
            dz_h[...] = d_pre_h.swapaxes(0, 1)
            dz_h = dz_h.reshape(GH, T * N)
    # [h; (x;) 1] of every step as (T*N, K) rows: a C-contiguous right operand.
    entering = ws.empty("entering", (T, N, K), dtype)
    entering[...] = stacked[:T].swapaxes(1, 2)
    entering = entering.reshape(T * N, K)
    d_hidden = ws.empty("d_hidden", (GH, K), dtype)
    threads.matmul(xp, dz_h, entering, out=d_hidden)
    if inputs is None:  # folded: the input's columns sit in d_hidden, after h's
        d_input = d_hidden[:, H:]
    else:
        d_input = ws.empty("d_input", (GH, D + 1), dtype)
        threads.matmul(xp, dz_x, inputs.T, out=d_input)
    grads = [
        _pytorch_rows(xp, cell, d_input[:, :D]),
        _pytorch_rows(xp, cell, d_hidden[:, :H]),
        _pytorch_rows(xp, cell, d_input[:, D]),
        _pytorch_rows(xp, cell, d_hidden[:, K - 1]),
    ]
    if not wants_dx:
        return grads, None
    # As (T*N, D) rows: BLAS is faster with the long side as rows.
    dx = ws.empty("dx_part", (T * N, D), dtype)
    threads.matmul(xp, dz_x.T, w_x, out=dx)
    return grads, dx.reshape(T, N, D)


def final_state(
    runs: Sequence[_SequenceRun],
    index: int,
    anchor: Tensor,
    shape: tuple[int, ...],
    anchor_is_output: bool,
) -> Tensor:
    """State `index` after the last step of every layer, stacked: (L * dirs, N, H) -> `shape`.

    One small tape entry whose input is `anchor` (the last layer's output, or the
    h this c goes with), so the layers' entries are reachable from it. Its
    backward hands each layer its slice of the gradient through the run and
    sends a zero gradient to `anchor`, which makes the layers' backward run.
    """
    xp = get_array_module(anchor.data)
    data = xp.concatenate([run.final[index] for run in runs]).reshape(shape)

    def backward(g: Any) -> tuple[Any]:
        rows = sum(run.final[index].shape[0] for run in runs)  # explicit: N may be 0
        g = g.reshape(rows, *runs[0].final[index].shape[1:])
        start = 0
        for run in runs:
            dirs = run.final[index].shape[0]
            run.final_grads[index] = g[start : start + dirs]
            start += dirs
        # A zero-stride zero: it triggers the layers' backward without costing memory.
        zero = xp.broadcast_to(xp.zeros((), dtype=anchor.dtype), anchor.shape)
        if anchor_is_output:
            runs[-1].no_output_grad = zero
        return (zero,)

    return record("recurrent_final_state", (anchor,), data, backward)


# ---- the functional form shared by the Modules --------------------------------------
def _cell_with(owner: str, cell: CellMath, nonlinearity: Any) -> CellMath:
    """`cell`, or for an Elman RNN the cell of `nonlinearity` ('tanh' or 'relu'); the
    errors name `owner`. Only the Elman RNN has a choice: the gated cells' activations
    are part of their equations."""
    if not isinstance(cell, RNNMath):
        if nonlinearity != "tanh":
            raise ValueError(f"{owner}: nonlinearity is an RNN option; got {nonlinearity!r}")
        return cell
    if nonlinearity not in RNNMath.NONLINEARITIES:
        raise ValueError(
            f"{owner}: nonlinearity must be one of {RNNMath.NONLINEARITIES}; got {nonlinearity!r}"
        )
    return CELL_MATH["rnn" if nonlinearity == "tanh" else f"rnn_{nonlinearity}"]


def _nonlinearity_repr(cell: CellMath) -> list[str]:
    """The repr's nonlinearity entry: only for an RNN off its tanh default."""
    if isinstance(cell, RNNMath) and cell.nonlinearity != "tanh":
        return [f"nonlinearity={cell.nonlinearity!r}"]
    return []


def _cell_math(cell: str | CellMath) -> CellMath:
    if isinstance(cell, CellMath):
        return cell
    if cell not in CELL_MATH:
        raise ValueError(f"cell must be one of {sorted(CELL_MATH)}; got {cell!r}")
    return CELL_MATH[cell]


def _check_input(owner: str, x: Any, ndim: int, input_size: int, like: Tensor) -> None:
    layout = "(N, T, D)" if ndim == 3 else "(N, D)"
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: x must be a Tensor {layout}; got {type(x).__name__}")
    if x.ndim != ndim or x.shape[-1] != input_size:
        raise ValueError(
            f"{owner}: x must have shape {layout} with D=input_size={input_size}; "
            f"got shape {x.shape}"
        )
    if ndim == 3 and x.shape[1] == 0:
        raise ValueError(
            f"{owner}: x must have at least one time step (T >= 1); got shape {x.shape}"
        )
    if x.dtype != like.dtype:
        raise TypeError(
            f"{owner}: x has dtype {x.dtype} but the parameters are {like.dtype}; "
            f"convert x with x.astype(...) or build the layer with dtype={like.dtype}"
        )
    check_same_backend(owner, x.data, like.data)


def _check_state(
    owner: str, state: Any, count: int, shape: tuple[int, ...], like: Tensor
) -> tuple[Tensor, ...]:
    """The state as a tuple of `count` Tensors of `shape` (empty for None)."""
    if state is None:
        return ()
    what = "a Tensor h" if count == 1 else "a tuple (h, c) of Tensors"
    parts = (state,) if count == 1 else state
    if (
        (count == 1 and not isinstance(state, Tensor))
        or (count > 1 and (not isinstance(state, (tuple, list)) or len(state) != count))
        or not all(isinstance(p, Tensor) for p in parts)
    ):
        raise TypeError(f"{owner}: state must be None or {what}; got {type(state).__name__}")
    for name, p in zip("hc", parts):
        if p.shape != shape:
            raise ValueError(f"{owner}: state {name} must have shape {shape}; got {p.shape}")
        if p.dtype != like.dtype:
            raise TypeError(f"{owner}: state {name} must have dtype {like.dtype}; got {p.dtype}")
        check_same_backend(owner, p.data, like.data)
    return tuple(parts)


def recurrent_sequence(
    cell: str | CellMath,
    x: Tensor,
    weights: Sequence[Sequence[Tensor]],
    state: State | None = None,
    lengths: Any = None,
    dropout: float = 0.0,
    generator: np.random.Generator | None = None,
    owner: str = "recurrent_sequence",
) -> tuple[Tensor, State]:
    """Run stacked recurrent layers over a batch-first sequence (the Modules' forward).

    cell: 'rnn' (tanh), 'rnn_relu', 'lstm' or 'gru'. x: (N, T, D). weights: per layer, per direction
    [weight_ih, weight_hh, bias_ih, bias_hh] (4 or 8 Tensors; 8 = bidirectional).
    state: h, or (h, c) for the LSTM, each (L * dirs, N, H); None means zeros.
    lengths: N ints in [0, T] or None. dropout: applied to every layer's output but
    the last (pass 0 outside training). Returns out (N, T, dirs * H) and the final
    state in the layout of `state`.
    """
    math = _cell_math(cell)
    layers = len(weights)
    dirs = len(weights[0]) // 4
    first = weights[0][0]
    H = weights[0][1].shape[1]
    _check_input(owner, x, 3, first.shape[1], first)
    N, T, _ = x.shape
    states = _check_state(owner, state, math.state_count, (layers * dirs, N, H), first)
    host_lengths = _host_lengths(owner, lengths, N, T)
    padding = None
    if host_lengths is not None:
        padding = _Padding(host_lengths, dirs, T, get_array_module(x.data), x.dtype)
    rng = default_generator() if generator is None else generator

    runs = []
    layer_input = x
    for k, layer_weights in enumerate(weights):
        out, run = fused_layer(
            math, layer_input, layer_weights, states, slice(k * dirs, (k + 1) * dirs), padding
        )
        runs.append(run)
        if dropout > 0 and k < layers - 1:
            # Built in the layer's dtype: the same values as (draw >= p) / (1 - p).
            mask = (rng.random(out.shape) >= dropout).astype(out.dtype)
            mask *= 1.0 / (1.0 - dropout) if dropout < 1 else 0.0
            out = ops.mul(out, Tensor(get_backend(out.backend).asarray(mask)))
        layer_input = out

    shape = (layers * dirs, N, H)
    h = final_state(runs, 0, out, shape, anchor_is_output=True)
    if math.state_count == 1:
        return out, h
    return out, (h, final_state(runs, 1, h, shape, anchor_is_output=False))


# ---- Modules -------------------------------------------------------------------------
def _float_dtype(owner: str, dtype: Any) -> np.dtype:
    resolved = np.dtype(np.float32 if dtype is None else dtype)
    if resolved.kind != "f":
        raise TypeError(f"{owner}: dtype must be a floating type; got {resolved}")
    return resolved


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int; got {value!r}")
    return int(value)


def _uniform_parameter(
    shape: tuple[int, ...], bound: float, rng: np.random.Generator, dtype: np.dtype
) -> Parameter:
    """U(-bound, bound) drawn on the host, so a seed gives the same numbers on every backend."""
    host = rng.uniform(-bound, bound, size=shape).astype(dtype)
    return Parameter(get_backend().asarray(host))


def _gate_parameters(
    cell: CellMath, input_size: int, hidden_size: int, rng: np.random.Generator, dtype: np.dtype
) -> dict[str, Parameter]:
    """weight_ih (G*H, D), weight_hh (G*H, H), bias_ih, bias_hh (G*H,), drawn in that order
    from U(-1/sqrt(H), 1/sqrt(H)) as PyTorch does, for one layer and direction."""
    GH, bound = cell.gate_count * hidden_size, 1.0 / np.sqrt(hidden_size)
    shapes = {
        "weight_ih": (GH, input_size),
        "weight_hh": (GH, hidden_size),
        "bias_ih": (GH,),
        "bias_hh": (GH,),
    }
    return {name: _uniform_parameter(shape, bound, rng, dtype) for name, shape in shapes.items()}


class _RecurrentLayers(Module):
    """Shared Module for RNN, LSTM and GRU (see their docstrings)."""

    _cell: CellMath

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = None,
        generator: np.random.Generator | None = None,
        *,
        nonlinearity: str = "tanh",
    ):
        super().__init__()
        owner = type(self).__name__
        self._cell = _cell_with(owner, self._cell, nonlinearity)
        self.input_size = _positive_int(owner, "input_size", input_size)
        self.hidden_size = H = _positive_int(owner, "hidden_size", hidden_size)
        self.num_layers = _positive_int(owner, "num_layers", num_layers)
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"{owner}: dropout must be in [0, 1]; got {dropout!r}")
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.generator = generator
        dtype = _float_dtype(owner, dtype)
        rng = default_generator() if generator is None else generator
        dirs = 2 if self.bidirectional else 1
        for k in range(self.num_layers):
            layer_input = self.input_size if k == 0 else H * dirs
            for suffix in ("", "_reverse")[:dirs]:
                params = _gate_parameters(self._cell, layer_input, H, rng, dtype)
                for name, param in params.items():
                    setattr(self, f"{name}_l{k}{suffix}", param)

    def layer_weights(self) -> list[list[Tensor]]:
        """Per layer, per direction [weight_ih, weight_hh, bias_ih, bias_hh]."""
        suffixes = ("", "_reverse") if self.bidirectional else ("",)
        return [
            [
                getattr(self, f"{name}_l{k}{suffix}")
                for suffix in suffixes
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            for k in range(self.num_layers)
        ]

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Any = None
    ) -> tuple[Tensor, State]:
        return recurrent_sequence(
            self._cell,
            x,
            self.layer_weights(),
            state,
            lengths,
            dropout=self.dropout if self.training else 0.0,
            generator=self.generator,
            owner=type(self).__name__,
        )

    def extra_repr(self) -> str:
        extras = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            extras.append(f"num_layers={self.num_layers}")
        if self.dropout:
            extras.append(f"dropout={self.dropout}")
        if self.bidirectional:
            extras.append("bidirectional=True")
        return ", ".join(extras + _nonlinearity_repr(self._cell))


_LAYERS_DOC = """

    Called as ``out, state = layer(x, state=None, lengths=None)``:

    - x: (N, T, D) batch-first, D = input_size.
    - state: {state}, each (L * dirs, N, H) as in PyTorch (rows layer by layer,
      forward direction before reverse; dirs = 2 if bidirectional). None means zeros.
    - lengths: N ints in [0, T], each row's valid length, or None (all T). Padded
      steps leave the state unchanged and output zeros; the final state of a row is
      its state after its last valid step; the reverse direction starts there.
    - out: (N, T, H * dirs), the last layer's h at every step (directions concatenated).
    - state (returned): the final state, in the layout above; pass it to the next call
      to carry it on (`detach()` it between batches).

    Parameters (PyTorch's names and layout, G = {gates}), for layer k and direction
    suffix '' or '_reverse': weight_ih_l{{k}} (G*H, D_k), weight_hh_l{{k}} (G*H, H),
    bias_ih_l{{k}} (G*H,), bias_hh_l{{k}} (G*H,), with D_0 = input_size and
    D_k = H * dirs above. Initialisation (PyTorch's default): every weight and bias
    U(-1/sqrt(H), 1/sqrt(H)), drawn on the host from `generator` (default: the
    library's generator, see `tr.manual_seed`) in that parameter order; load other
    values with `load_state_dict` or `tr.interop.load_torch_state_dict`.

    dropout: inverted dropout on every layer's output except the last, in training
    mode only; its masks come from the same generator. dtype: float32 unless given.
    One call records one tape entry per layer, whatever T.
"""


class RNN(_RecurrentLayers):
    __doc__ = (
        "Elman RNN, h' = act(W_ih x + b_ih + W_hh h + b_hh) with act = tanh (default) or "
        "relu (`nonlinearity='relu'`, keyword only), stacked and optionally bidirectional."
        + _LAYERS_DOC.format(state="h", gates=1)
    )
    _cell = CELL_MATH["rnn"]


class LSTM(_RecurrentLayers):
    __doc__ = (
        "LSTM, gates i, f, g, o in PyTorch's order; c' = f * c + i * g, "
        "h' = o * tanh(c')." + _LAYERS_DOC.format(state="a tuple (h, c)", gates=4)
    )
    _cell = CELL_MATH["lstm"]


class GRU(_RecurrentLayers):
    __doc__ = (
        "GRU, gates r, z, n in PyTorch's order with the reset gate after the hidden "
        "matmul: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), "
        "h' = (1 - z) * n + z * h." + _LAYERS_DOC.format(state="h", gates=3)
    )
    _cell = CELL_MATH["gru"]


class _RecurrentCell(Module):
    """Shared Module for the one-step cells (see their docstrings)."""

    _cell: CellMath

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        dtype: Any = None,
        generator: np.random.Generator | None = None,
        *,
        nonlinearity: str = "tanh",
    ):
        super().__init__()
        owner = type(self).__name__
        self._cell = _cell_with(owner, self._cell, nonlinearity)
        self.input_size = _positive_int(owner, "input_size", input_size)
        self.hidden_size = H = _positive_int(owner, "hidden_size", hidden_size)
        dtype = _float_dtype(owner, dtype)
        rng = default_generator() if generator is None else generator
        for name, param in _gate_parameters(self._cell, self.input_size, H, rng, dtype).items():
            setattr(self, name, param)

    def forward(self, x: Tensor, state: State | None = None) -> State:
        owner = type(self).__name__
        _check_input(owner, x, 2, self.input_size, self.weight_ih)
        N, H = x.shape[0], self.hidden_size
        count = self._cell.state_count
        states = _check_state(owner, state, count, (N, H), self.weight_ih)
        weights = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        # The sequence driver with T = 1: its output is the new h.
        h, run = fused_layer(self._cell, x, weights, states, slice(0, 1), out_shape=(N, H))
        if count == 1:
            return h
        return h, final_state([run], 1, h, (N, H), anchor_is_output=True)

    def extra_repr(self) -> str:
        return ", ".join(
            [f"{self.input_size}, {self.hidden_size}", *_nonlinearity_repr(self._cell)]
        )


_CELL_DOC = """

    Called as ``{call}`` with x (N, D), D = input_size, and {state} (N, H)
    (None means zeros). It runs the sequence layers' fused op with T = 1, so the
    math is the same. Parameters (PyTorch's names, G = {gates}): weight_ih (G*H, D),
    weight_hh (G*H, H), bias_ih (G*H,), bias_hh (G*H,), initialised
    U(-1/sqrt(H), 1/sqrt(H)) from `generator` (default: the library's generator).
"""


class RNNCell(_RecurrentCell):
    __doc__ = (
        "One Elman RNN step, h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh (default) "
        "or relu (`nonlinearity='relu'`, keyword only)."
        + _CELL_DOC.format(call="h = cell(x, h)", state="h", gates=1)
    )
    _cell = CELL_MATH["rnn"]


class LSTMCell(_RecurrentCell):
    __doc__ = "One LSTM step (gates i, f, g, o)." + _CELL_DOC.format(
        call="h, c = cell(x, (h, c))", state="h and c each", gates=4
    )
    _cell = CELL_MATH["lstm"]


class GRUCell(_RecurrentCell):
    __doc__ = "One GRU step (gates r, z, n; reset after the hidden matmul)." + _CELL_DOC.format(
        call="h = cell(x, h)", state="h", gates=3
    )
    _cell = CELL_MATH["gru"]
