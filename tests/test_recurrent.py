"""Fused recurrent layers and cells: `tr.nn.RNN/LSTM/GRU` and `RNNCell/LSTMCell/GRUCell`.

The fused op is checked three ways: against float64 finite differences
(hypothesis + `gradcheck`), against a step-by-step reference composed of
primitive tr ops in this file (value and gradient), and against itself (a
sequence run in chunks with the state carried equals one pass). The rest
states the contract: one tape entry per layer per call, padding semantics,
seeds, dropout, dtypes and the error messages.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from conftest import to_host
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn.nn.recurrent import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    LSTMCell,
    RNNCell,
    recurrent_sequence,
)
from tinygrad_rnn.testing import gradcheck

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

# "rnn_relu" is the Elman RNN with nonlinearity="relu" (the functional form's cell name).
LAYERS = {"rnn": RNN, "rnn_relu": partial(RNN, nonlinearity="relu"), "lstm": LSTM, "gru": GRU}
CELLS = {
    "rnn": RNNCell, "rnn_relu": partial(RNNCell, nonlinearity="relu"),
    "lstm": LSTMCell, "gru": GRUCell,
}  # fmt: skip
KINDS = sorted(LAYERS)
# Gradient checks cost two forward passes per input element: tiny sizes.
SMALL = settings(deadline=None)


# ---- a reference built from primitive tr ops ----------------------------------------
def reference_step(kind, x, state, w_ih, w_hh, b_ih, b_hh):
    """One step written with tr ops only; x (N, D), state h or (h, c) (N, H)."""
    h = state[0] if kind == "lstm" else state
    gates_x = x @ w_ih.T + b_ih
    gates_h = h @ w_hh.T + b_hh
    if kind == "rnn":
        return tr.tanh(gates_x + gates_h)
    if kind == "rnn_relu":
        return tr.relu(gates_x + gates_h)
    if kind == "lstm":
        i, f, g, o = tr.split(gates_x + gates_h, 4, axis=-1)
        c = tr.sigmoid(f) * state[1] + tr.sigmoid(i) * tr.tanh(g)
        return tr.sigmoid(o) * tr.tanh(c), c
    xr, xz, xn = tr.split(gates_x, 3, axis=-1)
    hr, hz, hn = tr.split(gates_h, 3, axis=-1)
    r, z = tr.sigmoid(xr + hr), tr.sigmoid(xz + hz)
    n = tr.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def reference_layers(kind, x, weights, state, lengths=None):
    """Stacked (bi)directional layers by explicit loops over steps; same contract as ours."""
    N, T, _ = x.shape
    dirs = len(weights[0]) // 4
    H = weights[0][1].shape[1]
    parts = 2 if kind == "lstm" else 1
    if state is None:
        zeros = tr.tensor(np.zeros((len(weights) * dirs, N, H)), dtype=x.dtype)
        state = (zeros, zeros) if parts == 2 else zeros
    states = state if parts == 2 else (state,)
    valid = (
        np.ones((T, N, 1))
        if lengths is None
        else (np.arange(T)[:, None, None] < np.asarray(lengths)[None, :, None]).astype(np.float64)
    )
    finals = [[] for _ in range(parts)]
    layer_input = x
    for k, layer_weights in enumerate(weights):
        outputs = []
        for d in range(dirs):
            row = k * dirs + d
            carried = tuple(s[row] for s in states)
            steps = [None] * T
            for t in range(T) if d == 0 else reversed(range(T)):
                m = tr.tensor(valid[t], dtype=x.dtype)
                new = reference_step(
                    kind,
                    layer_input[:, t],
                    carried if parts == 2 else carried[0],
                    *layer_weights[4 * d : 4 * d + 4],
                )
                new = new if parts == 2 else (new,)
                carried = tuple(m * n + (1 - m) * c for n, c in zip(new, carried))
                steps[t] = m * new[0]
            outputs.append(tr.stack(steps, axis=1))
            for j in range(parts):
                finals[j].append(carried[j])
        layer_input = outputs[0] if dirs == 1 else tr.concatenate(outputs, axis=-1)
    stacked = tuple(tr.stack(f, axis=0) for f in finals)
    return layer_input, (stacked if parts == 2 else stacked[0])


# ---- helpers -------------------------------------------------------------------------
def random_weights(rng, kind, D, H, layers, dirs, scale=0.6):
    G = {"rnn": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[kind]
    weights = []
    for k in range(layers):
        D_k = D if k == 0 else H * dirs
        for _ in range(dirs):
            weights += [
                rng.uniform(-scale, scale, shape)
                for shape in ((G * H, D_k), (G * H, H), (G * H,), (G * H,))
            ]
    return weights


def group(flat, layers):
    per = len(flat) // layers
    return [list(flat[k * per : (k + 1) * per]) for k in range(layers)]


def as_state(kind, parts):
    return tuple(parts) if kind == "lstm" else parts[0]


def state_parts(state):
    return list(state) if isinstance(state, tuple) else [state]


@st.composite
def configs(draw, max_layers=2, max_side=3):
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    kind = draw(st.sampled_from(KINDS))
    layers = draw(st.integers(1, max_layers))
    dirs = draw(st.sampled_from([1, 2]))
    N, T = draw(st.integers(1, max_side)), draw(st.integers(1, max_side + 1))
    D, H = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    lengths = None
    if draw(st.booleans()):
        lengths = [draw(st.integers(0, T)) for _ in range(N)]
    with_state = draw(st.booleans())
    return dict(
        rng=rng,
        kind=kind,
        layers=layers,
        dirs=dirs,
        N=N,
        T=T,
        D=D,
        H=H,
        lengths=lengths,
        with_state=with_state,
    )


# ---- gradient checks -------------------------------------------------------------------
@SMALL
@given(configs())
def test_fused_layers_gradcheck_inputs_state_and_all_weights(cfg):
    rng, kind, layers, dirs = cfg["rng"], cfg["kind"], cfg["layers"], cfg["dirs"]
    N, T, D, H = cfg["N"], cfg["T"], cfg["D"], cfg["H"]
    parts = 2 if kind == "lstm" else 1
    x = rng.standard_normal((N, T, D))
    state = [rng.standard_normal((layers * dirs, N, H)) for _ in range(parts)]
    weights = random_weights(rng, kind, D, H, layers, dirs)
    n_state = parts if cfg["with_state"] else 0

    def run(x, *rest):
        given_state = as_state(kind, rest[:n_state]) if n_state else None
        out, final = recurrent_sequence(
            kind, x, group(rest[n_state:], layers), given_state, cfg["lengths"]
        )
        pieces = [out.reshape(-1)] + [s.reshape(-1) for s in state_parts(final)]
        return tr.concatenate(pieces)

    gradcheck(run, [x, *state[:n_state], *weights], atol=1e-6, rtol=1e-4)


@SMALL
@given(st.sampled_from(KINDS), st.integers(0, 2**31), st.booleans())
def test_cells_gradcheck(kind, seed, with_state):
    rng = np.random.default_rng(seed)
    N, D, H = 2, 2, 2
    parts = 2 if kind == "lstm" else 1
    cell = CELLS[kind](D, H, dtype=np.float64)
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    x = rng.standard_normal((N, D))
    state = [rng.standard_normal((N, H)) for _ in range(parts)] if with_state else []
    weights = [to_host(getattr(cell, n)) for n in names]

    def run(x, *rest):
        given = as_state(kind, rest[: len(state)]) if state else None
        for name, w in zip(names, rest[len(state) :]):
            object.__setattr__(cell, name, w)  # the leaves stand in for the parameters
        result = cell(x, given)
        return tr.concatenate([s.reshape(-1) for s in state_parts(result)])

    gradcheck(run, [x, *state, *weights])


# ---- against the reference composed of primitive ops ------------------------------------
def assert_fused_matches_reference(rng, kind, layers, dirs, N, T, D, H, lengths, with_state=True):
    """The fused layers and the reference composed of primitive ops agree in value and in
    every gradient (input, initial state, weights), on one random float64 case."""
    parts = 2 if kind == "lstm" else 1
    host = (
        [rng.standard_normal((N, T, D))]
        + [rng.standard_normal((layers * dirs, N, H)) for _ in range(parts)]
        + random_weights(rng, kind, D, H, layers, dirs, scale=1.0)
    )
    results = []
    for runner in (recurrent_sequence, reference_layers):
        leaves = [tr.tensor(a, requires_grad=True) for a in host]
        state = as_state(kind, leaves[1 : 1 + parts]) if with_state else None
        out, final = runner(kind, leaves[0], group(leaves[1 + parts :], layers), state, lengths)
        loss = (out * tr.tensor(np.linspace(-1, 1, out.size).reshape(out.shape))).sum()
        for j, s in enumerate(state_parts(final)):
            loss = loss + (s * (j + 2.0)).sum()
        loss.backward()
        grads = [
            np.zeros(a.shape) if t.grad is None else to_host(t.grad) for a, t in zip(host, leaves)
        ]
        results.append(([to_host(out)] + [to_host(s) for s in state_parts(final)], grads))
    (ours, our_grads), (ref, ref_grads) = results
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
    for a, b in zip(our_grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@settings(deadline=None)
@given(configs(max_layers=3, max_side=4))
def test_fused_equals_composition_of_primitive_ops_in_value_and_gradient(cfg):
    sizes = {k: cfg[k] for k in ("N", "T", "D", "H")}
    assert_fused_matches_reference(
        cfg["rng"], cfg["kind"], cfg["layers"], cfg["dirs"], **sizes, lengths=cfg["lengths"],
        with_state=cfg["with_state"],
    )  # fmt: skip


def test_cell_step_equals_reference_step_and_one_step_layer():
    rng = np.random.default_rng(0)
    for kind in KINDS:
        cell = CELLS[kind](3, 4, dtype=np.float64)
        layer = LAYERS[kind](3, 4, dtype=np.float64)
        layer.load_state_dict({f"{n}_l0": v for n, v in cell.state_dict().items()})
        x = rng.standard_normal((2, 3))
        parts = [rng.standard_normal((2, 4)) for _ in range(2 if kind == "lstm" else 1)]
        state = as_state(kind, [tr.tensor(p) for p in parts])
        ours = state_parts(cell(tr.tensor(x), state))
        ref = state_parts(
            reference_step(
                kind,
                tr.tensor(x),
                state,
                *[getattr(cell, n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")],
            )
        )
        _, layer_final = layer(
            tr.tensor(x[:, None, :]), as_state(kind, [tr.tensor(p[None]) for p in parts])
        )
        for a, b, c in zip(ours, ref, state_parts(layer_final)):
            assert a.shape == (2, 4)
            np.testing.assert_allclose(to_host(a), to_host(b), rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(to_host(a), to_host(c)[0], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_stepped_over_time_equals_the_layer(kind):
    rng = np.random.default_rng(1)
    tr.manual_seed(0)
    layer = LAYERS[kind](3, 5, dtype=np.float64)
    cell = CELLS[kind](3, 5, dtype=np.float64)
    cell.load_state_dict({n[: -len("_l0")]: v for n, v in layer.state_dict().items()})
    x = rng.standard_normal((2, 6, 3))
    out, final = layer(tr.tensor(x))
    state = None
    for t in range(6):
        state = cell(tr.tensor(x[:, t]), state)
        h = state[0] if kind == "lstm" else state
        np.testing.assert_allclose(to_host(h), to_host(out)[:, t], rtol=1e-12, atol=1e-13)
    for a, b in zip(state_parts(state), state_parts(final)):
        np.testing.assert_allclose(to_host(a), to_host(b)[0], rtol=1e-12, atol=1e-13)


def test_cells_reuse_the_fused_sequence_op():
    for kind in KINDS:
        cell = CELLS[kind](2, 3)
        result = state_parts(cell(tr.tensor(np.ones((1, 2), np.float32))))
        assert [e.op for e in result[0].tape()] == [f"{kind}_sequence"]


# ---- carried state ------------------------------------------------------------------------
@settings(deadline=None)
@given(
    st.sampled_from(KINDS),
    st.integers(0, 2**31),
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
)
def test_carried_state_equals_one_long_pass(kind, seed, chunk_sizes):
    rng = np.random.default_rng(seed)
    tr.manual_seed(seed)
    layer = LAYERS[kind](3, 4, num_layers=2, dtype=np.float64)
    T = sum(chunk_sizes)
    x = rng.standard_normal((2, T, 3))
    out, final = layer(tr.tensor(x))
    state, pieces, start = None, [], 0
    for size in chunk_sizes:
        chunk_out, state = layer(tr.tensor(x[:, start : start + size]), state)
        pieces.append(to_host(chunk_out))
        start += size
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), to_host(out), rtol=1e-12, atol=1e-13)
    for a, b in zip(state_parts(state), state_parts(final)):
        np.testing.assert_allclose(to_host(a), to_host(b), rtol=1e-12, atol=1e-13)


# ---- tape entries ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (3, False), (2, True)])
def test_one_tape_entry_per_layer_per_call_whatever_the_length(kind, layers, bidirectional):
    layer = LAYERS[kind](3, 4, num_layers=layers, bidirectional=bidirectional)
    for T in (1, 7, 40):
        x = tr.tensor(np.ones((2, T, 3), np.float32), requires_grad=True)
        out, state = layer(x, lengths=[T, max(T - 3, 0)])
        assert len(out.tape()) == layers
        assert [e.op for e in out.tape()] == [f"{kind}_sequence"] * layers
        # The final state adds one small gather entry (LSTM: one for h, one for c).
        assert len(state_parts(state)[-1].tape()) == layers + len(state_parts(state))


def test_backward_from_final_state_only_reaches_weights_and_inputs():
    rng = np.random.default_rng(2)
    tr.manual_seed(2)
    layer = LSTM(2, 3, num_layers=2, dtype=np.float64)
    x = tr.tensor(rng.standard_normal((2, 4, 2)), requires_grad=True)
    _, (h, c) = layer(x)
    (c.sum() + h[-1].sum()).backward()
    assert x.grad is not None and np.abs(to_host(x.grad)).sum() > 0
    assert all(p.grad is not None for p in layer.parameters())


# ---- padding ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_rows_equal_their_unpadded_runs_and_output_zeros(kind, bidirectional):
    rng = np.random.default_rng(3)
    tr.manual_seed(3)
    layer = LAYERS[kind](3, 4, num_layers=2, bidirectional=bidirectional, dtype=np.float64)
    lengths = [5, 2, 0, 4]
    x = rng.standard_normal((4, 5, 3))
    out, final = layer(tr.tensor(x), lengths=lengths)
    out = to_host(out)
    finals = [to_host(s) for s in state_parts(final)]
    for n, length in enumerate(lengths):
        assert np.all(out[n, length:] == 0)
        if length == 0:
            for s in finals:
                assert np.all(s[:, n] == 0)  # zero initial state, never updated
            continue
        row_out, row_final = layer(tr.tensor(x[n : n + 1, :length]))
        np.testing.assert_allclose(out[n, :length], to_host(row_out)[0], rtol=1e-12, atol=1e-13)
        for s, r in zip(finals, state_parts(row_final)):
            np.testing.assert_allclose(s[:, n], to_host(r)[:, 0], rtol=1e-12, atol=1e-13)


def test_full_lengths_equal_no_lengths():
    tr.manual_seed(4)
    layer = GRU(2, 3, bidirectional=True)
    x = tr.tensor(np.random.default_rng(4).standard_normal((3, 4, 2)).astype(np.float32))
    out_a, h_a = layer(x)
    out_b, h_b = layer(x, lengths=np.array([4, 4, 4]))
    np.testing.assert_array_equal(to_host(out_a), to_host(out_b))
    np.testing.assert_array_equal(to_host(h_a), to_host(h_b))


# ---- seeds, initialisation, dropout, dtype -------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_init_and_pytorch_bounds(kind):
    tr.manual_seed(11)
    a = LAYERS[kind](3, 16, num_layers=2, bidirectional=True)
    tr.manual_seed(11)
    b = LAYERS[kind](3, 16, num_layers=2, bidirectional=True)
    c = LAYERS[kind](3, 16, num_layers=2, bidirectional=True, generator=np.random.default_rng(5))
    d = LAYERS[kind](3, 16, num_layers=2, bidirectional=True, generator=np.random.default_rng(5))
    sa, sb, sc, sd = a.state_dict(), b.state_dict(), c.state_dict(), d.state_dict()
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name])
        np.testing.assert_array_equal(sc[name], sd[name])
        assert not np.array_equal(sa[name], sc[name])
        assert np.abs(sa[name]).max() <= 1 / np.sqrt(16)
    cell_a = CELLS[kind](3, 4, generator=np.random.default_rng(1))
    cell_b = CELLS[kind](3, 4, generator=np.random.default_rng(1))
    for name, value in cell_a.state_dict().items():
        np.testing.assert_array_equal(value, cell_b.state_dict()[name])


def test_parameter_names_shapes_and_order_follow_pytorch():
    layer = LSTM(3, 5, num_layers=2, bidirectional=True)
    names = [n for n, _ in layer.named_parameters()]
    expected = [
        f"{w}_l{k}{s}"
        for k in range(2)
        for s in ("", "_reverse")
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]
    assert names == expected
    assert layer.weight_ih_l0.shape == (20, 3)
    assert layer.weight_ih_l1_reverse.shape == (20, 10)
    assert layer.weight_hh_l1.shape == (20, 5)
    assert layer.bias_hh_l0_reverse.shape == (20,)
    assert [n for n, _ in GRUCell(3, 5).named_parameters()] == [
        "weight_ih",
        "weight_hh",
        "bias_ih",
        "bias_hh",
    ]
    assert GRUCell(3, 5).weight_hh.shape == (15, 5)


def test_dtype_float32_by_default_and_float64_on_request():
    x32 = tr.tensor(np.ones((1, 2, 3), np.float32))
    for kind in KINDS:
        layer = LAYERS[kind](3, 2)
        assert all(p.dtype == np.float32 for p in layer.parameters())
        out, state = layer(x32)
        assert out.dtype == np.float32 and state_parts(state)[0].dtype == np.float32
        layer64 = LAYERS[kind](3, 2, dtype=np.float64)
        out64, _ = layer64(tr.tensor(np.ones((1, 2, 3))))
        assert out64.dtype == np.float64
        assert CELLS[kind](3, 2, dtype="float64").weight_ih.dtype == np.float64


def test_dropout_only_between_layers_and_only_in_training():
    x = tr.tensor(np.random.default_rng(5).standard_normal((4, 6, 3)))
    tr.manual_seed(5)
    layer = LSTM(3, 8, num_layers=2, dropout=0.5, dtype=np.float64)
    layer.eval()
    out_eval_1, _ = layer(x)
    out_eval_2, _ = layer(x)
    np.testing.assert_array_equal(to_host(out_eval_1), to_host(out_eval_2))
    layer.train()
    out_train, _ = layer(x)
    assert not np.allclose(to_host(out_train), to_host(out_eval_1))
    # One layer: nothing follows it, so no dropout even in training.
    single = GRU(3, 8, dropout=0.5, dtype=np.float64)
    out_single, _ = single(x)
    single.eval()
    np.testing.assert_array_equal(to_host(out_single), to_host(single(x)[0]))


def test_dropout_is_inverted_with_masks_from_the_generator():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 2))
    layer = RNN(2, 5, num_layers=2, dropout=0.4, dtype=np.float64)
    layer.generator = np.random.default_rng(42)
    out, _ = layer(tr.tensor(x))
    # The same mask by hand: layer 0, inverted dropout, then layer 1.
    weights = layer.layer_weights()
    hidden, _ = recurrent_sequence("rnn", tr.tensor(x), weights[:1])
    mask = (np.random.default_rng(42).random(hidden.shape) >= 0.4) / 0.6
    expected, _ = recurrent_sequence("rnn", hidden * tr.tensor(mask), weights[1:])
    np.testing.assert_allclose(to_host(out), to_host(expected), rtol=1e-12, atol=1e-13)
    # Same seed, same masks.
    layer.generator = np.random.default_rng(42)
    np.testing.assert_array_equal(to_host(layer(tr.tensor(x))[0]), to_host(out))


def test_no_grad_records_nothing():
    layer = LSTM(2, 3, num_layers=2)
    with tr.no_grad():
        out, (h, c) = layer(tr.tensor(np.ones((1, 3, 2), np.float32)))
    assert not out.requires_grad and out.tape() == [] and not h.requires_grad


def test_bidirectional_initial_state_is_used_per_direction():
    rng = np.random.default_rng(7)
    tr.manual_seed(7)
    layer = RNN(2, 3, bidirectional=True, dtype=np.float64)
    x = tr.tensor(rng.standard_normal((2, 4, 2)))
    h0 = rng.standard_normal((2, 2, 3))
    out, _ = layer(x, tr.tensor(h0))
    out_fwd_changed, _ = layer(x, tr.tensor(h0 * np.array([1.0, 0.0])[:, None, None]))
    out = to_host(out)
    changed = to_host(out_fwd_changed)
    np.testing.assert_array_equal(out[..., :3], changed[..., :3])  # forward rows kept
    assert not np.allclose(out[..., 3:], changed[..., 3:])  # reverse row 1 zeroed


# ---- bad input ------------------------------------------------------------------------
def test_bad_inputs_name_the_argument_the_expected_and_the_received_value():
    lstm = LSTM(3, 4, num_layers=2)
    x = tr.tensor(np.ones((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"x must have shape \(N, T, D\).*3.*\(2, 5\)"):
        lstm(tr.tensor(np.ones((2, 5), np.float32)))
    with pytest.raises(ValueError, match=r"x must have shape.*input_size=3.*\(2, 5, 7\)"):
        lstm(tr.tensor(np.ones((2, 5, 7), np.float32)))
    with pytest.raises(TypeError, match="x must be a Tensor"):
        lstm(np.ones((2, 5, 3), np.float32))
    with pytest.raises(TypeError, match="x has dtype float64 but the parameters are float32"):
        lstm(tr.tensor(np.ones((2, 5, 3))))
    h = tr.tensor(np.zeros((2, 2, 4), np.float32))
    with pytest.raises(TypeError, match=r"state must be None or a tuple \(h, c\)"):
        lstm(x, h)
    with pytest.raises(ValueError, match=r"state c must have shape \(2, 2, 4\); got \(1, 2, 4\)"):
        lstm(x, (h, tr.tensor(np.zeros((1, 2, 4), np.float32))))
    gru = GRU(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match=r"state h must have shape \(2, 2, 4\); got \(1, 2, 4\)"):
        gru(x, tr.tensor(np.zeros((1, 2, 4), np.float32)))
    with pytest.raises(ValueError, match=r"lengths\[1\]=6 is out of range.*T=5"):
        gru(x, lengths=[5, 6])
    with pytest.raises(ValueError, match=r"lengths\[0\]=-1 is out of range"):
        gru(x, lengths=[-1, 2])
    with pytest.raises(ValueError, match=r"lengths must be a sequence of N=2 ints.*\(3,\)"):
        gru(x, lengths=[1, 2, 3])
    with pytest.raises(TypeError, match="lengths must be integers"):
        gru(x, lengths=[1.5, 2.0])
    cell = LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\).*\(2, 5, 3\)"):
        cell(x)
    with pytest.raises(ValueError, match=r"state h must have shape \(2, 4\); got \(2, 2, 4\)"):
        cell(tr.tensor(np.ones((2, 3), np.float32)), (h, h))
    with pytest.raises(ValueError, match="hidden_size must be a positive int; got 0"):
        RNN(3, 0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\]; got 1.5"):
        RNN(3, 2, dropout=1.5)
    with pytest.raises(TypeError, match="dtype must be a floating type; got int32"):
        GRUCell(3, 2, dtype=np.int32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_an_empty_batch_runs_forward_and_backward_as_torch_does(kind, bidirectional):
    """N = 0: empty outputs and input gradient, all-zero weight gradients (the backward's
    chunk size divided by N)."""
    layer = LAYERS[kind](3, 4, num_layers=2, bidirectional=bidirectional, dtype=np.float64)
    x = tr.tensor(np.zeros((0, 5, 3)), requires_grad=True)
    out, state = layer(x)
    h = state[0] if kind == "lstm" else state
    (out.sum() + h.sum()).backward()
    assert out.shape == (0, 5, 4 * (1 + bidirectional)) and x.grad.shape == (0, 5, 3)
    assert all(not np.any(to_host(p.grad)) for p in layer.parameters())
    cell = CELLS[kind](3, 4, dtype=np.float64)
    x = tr.tensor(np.zeros((0, 3)), requires_grad=True)
    out = cell(x)
    (out[0] if kind == "lstm" else out).sum().backward()
    assert x.grad.shape == (0, 3)


def test_relu_and_tanh_rnns_of_one_shape_keep_their_own_buffers_until_backward():
    """Both run before one backward: each layer's gradients equal those of its own run
    (the two cells must not share pooled scratch, which is keyed by cell name)."""
    rng = np.random.default_rng(3)
    x_host = rng.standard_normal((4, 5, 3))
    layers = {act: RNN(3, 6, dtype=np.float64, nonlinearity=act) for act in ("tanh", "relu")}

    def grads(acts):
        x = tr.tensor(x_host, requires_grad=True)
        for layer in layers.values():
            layer.zero_grad()
        total = sum((layers[a](x)[0] * (k + 1.0)).sum() for k, a in enumerate(acts))
        total.backward()
        return {a: to_host(layers[a].weight_hh_l0.grad).copy() for a in acts}

    together = grads(["tanh", "relu"])
    alone = {**grads(["tanh"]), "relu": 2.0 * grads(["relu"])["relu"]}  # its weight was 2
    assert not np.allclose(together["tanh"], together["relu"])
    for act in ("tanh", "relu"):
        np.testing.assert_allclose(together[act], alone[act], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("module", [RNN, RNNCell])
def test_unknown_nonlinearity_is_refused_by_name(module):
    with pytest.raises(ValueError, match=r"RNN(Cell)?: nonlinearity must be one of .*'sigmoid'"):
        module(3, 4, nonlinearity="sigmoid")
    assert "nonlinearity='relu'" in repr(module(3, 4, nonlinearity="relu"))
    assert "nonlinearity" not in repr(module(3, 4))


@pytest.mark.parametrize("module", [LSTM, GRU, LSTMCell, GRUCell])
def test_a_gated_cell_refuses_a_nonlinearity_of_its_own(module):
    with pytest.raises(ValueError, match=r"nonlinearity is an RNN option; got 'relu'"):
        module(3, 4, nonlinearity="relu")
    assert module(3, 4, nonlinearity="tanh")._cell is module(3, 4)._cell
