"""Our recurrent layers against PyTorch's (the reference), in float64.

Weights go from torch to ours with `load_torch_state_dict`; then outputs, final
states, and the gradients of the input, the initial state and every weight
must agree to 1e-9. Padding is compared with torch's packed sequences.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from conftest import to_host

import tinygrad_rnn as tr
from tinygrad_rnn.interop import load_torch_state_dict, torch_state_dict
from tinygrad_rnn.nn.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

torch = pytest.importorskip("torch")

PAIRS = {
    "rnn": (RNN, torch.nn.RNN, RNNCell, torch.nn.RNNCell),
    "rnn_relu": tuple(
        partial(m, nonlinearity="relu") for m in (RNN, torch.nn.RNN, RNNCell, torch.nn.RNNCell)
    ),
    "lstm": (LSTM, torch.nn.LSTM, LSTMCell, torch.nn.LSTMCell),
    "gru": (GRU, torch.nn.GRU, GRUCell, torch.nn.GRUCell),
}
TOL = dict(rtol=1e-9, atol=1e-9)


def make_pair(kind, D, H, layers, bidirectional, seed):
    torch.manual_seed(seed)
    theirs = PAIRS[kind][1](
        D, H, num_layers=layers, bidirectional=bidirectional, batch_first=True
    ).double()
    ours = PAIRS[kind][0](D, H, num_layers=layers, bidirectional=bidirectional, dtype=np.float64)
    load_torch_state_dict(ours, theirs.state_dict())
    return ours, theirs


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


def run_both(kind, ours, theirs, x, initial, lengths=None):
    """Forward both, backward the same random contraction of out and final state."""
    rng = np.random.default_rng(123)
    x_t = torch.tensor(x, requires_grad=True)
    init_t = [torch.tensor(a, requires_grad=True) for a in initial]
    state_t = None if not init_t else (tuple(init_t) if kind == "lstm" else init_t[0])
    if lengths is None:
        out_t, final_t = theirs(x_t, state_t)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x_t, torch.tensor(lengths), batch_first=True, enforce_sorted=False
        )
        packed_out, final_t = theirs(packed, state_t)
        out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(
            packed_out, batch_first=True, total_length=x.shape[1]
        )

    x_o = tr.tensor(x, requires_grad=True)
    init_o = [tr.tensor(a, requires_grad=True) for a in initial]
    state_o = None if not init_o else (tuple(init_o) if kind == "lstm" else init_o[0])
    out_o, final_o = ours(x_o, state_o, lengths=lengths)

    weights = [rng.standard_normal(tuple(out_t.shape))] + [
        rng.standard_normal(tuple(s.shape)) for s in parts(final_t)
    ]
    loss_t = sum((a * torch.tensor(w)).sum() for a, w in zip([out_t, *parts(final_t)], weights))
    loss_o = sum(
        ((a * tr.tensor(w)).sum() for a, w in zip([out_o, *parts(final_o)], weights)),
        start=tr.tensor(0.0, dtype=np.float64),
    )
    loss_t.backward()
    loss_o.backward()
    return (out_o, final_o, x_o, init_o), (out_t, final_t, x_t, init_t)


def assert_match(kind, ours, theirs, o, t):
    out_o, final_o, x_o, init_o = o
    out_t, final_t, x_t, init_t = t
    np.testing.assert_allclose(to_host(out_o), out_t.detach().numpy(), **TOL)
    for a, b in zip(parts(final_o), parts(final_t)):
        np.testing.assert_allclose(to_host(a), b.detach().numpy(), **TOL)
    np.testing.assert_allclose(to_host(x_o.grad), x_t.grad.numpy(), **TOL)
    for a, b in zip(init_o, init_t):
        np.testing.assert_allclose(to_host(a.grad), b.grad.numpy(), **TOL)
    our_grads = torch_state_dict(ours, grads=True)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(our_grads[name], p.grad.numpy(), err_msg=name, **TOL)


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize(
    "layers,bidirectional,with_state",
    [(2, False, True), (1, True, True), (2, True, True), (2, True, False)],
)
def test_outputs_states_and_all_gradients_match_torch(kind, layers, bidirectional, with_state):
    rng = np.random.default_rng(0)
    ours, theirs = make_pair(kind, 3, 5, layers, bidirectional, seed=1)
    dirs = 2 if bidirectional else 1
    x = rng.standard_normal((4, 6, 3))
    initial = []
    if with_state:
        initial = [
            rng.standard_normal((layers * dirs, 4, 5)) for _ in range(2 if kind == "lstm" else 1)
        ]
    o, t = run_both(kind, ours, theirs, x, initial)
    assert_match(kind, ours, theirs, o, t)


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_match_torch_packed_sequences_unsorted(kind, bidirectional):
    rng = np.random.default_rng(1)
    ours, theirs = make_pair(kind, 2, 4, 2, bidirectional, seed=2)
    dirs = 2 if bidirectional else 1
    x = rng.standard_normal((5, 7, 2))
    lengths = [3, 7, 1, 5, 7]  # unsorted, with full and length-1 rows
    initial = [rng.standard_normal((2 * dirs, 5, 4)) for _ in range(2 if kind == "lstm" else 1)]
    o, t = run_both(kind, ours, theirs, x, initial, lengths=lengths)
    assert_match(kind, ours, theirs, o, t)


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_cells_match_torch_cells(kind):
    rng = np.random.default_rng(2)
    torch.manual_seed(3)
    theirs = PAIRS[kind][3](3, 4).double()
    ours = PAIRS[kind][2](3, 4, dtype=np.float64)
    load_torch_state_dict(ours, theirs.state_dict())
    x = rng.standard_normal((2, 3))
    initial = [rng.standard_normal((2, 4)) for _ in range(2 if kind == "lstm" else 1)]
    x_t = torch.tensor(x, requires_grad=True)
    init_t = [torch.tensor(a, requires_grad=True) for a in initial]
    x_o = tr.tensor(x, requires_grad=True)
    init_o = [tr.tensor(a, requires_grad=True) for a in initial]
    new_t = parts(theirs(x_t, tuple(init_t) if kind == "lstm" else init_t[0]))
    new_o = parts(ours(x_o, tuple(init_o) if kind == "lstm" else init_o[0]))
    u = [rng.standard_normal((2, 4)) for _ in new_t]
    sum((a * torch.tensor(w)).sum() for a, w in zip(new_t, u)).backward()
    loss = (new_o[0] * tr.tensor(u[0])).sum()
    for a, w in zip(new_o[1:], u[1:]):
        loss = loss + (a * tr.tensor(w)).sum()
    loss.backward()
    for a, b in zip(new_o, new_t):
        np.testing.assert_allclose(to_host(a), b.detach().numpy(), **TOL)
    np.testing.assert_allclose(to_host(x_o.grad), x_t.grad.numpy(), **TOL)
    for a, b in zip(init_o, init_t):
        np.testing.assert_allclose(to_host(a.grad), b.grad.numpy(), **TOL)
    our_grads = torch_state_dict(ours, grads=True)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(our_grads[name], p.grad.numpy(), err_msg=name, **TOL)


def test_float32_layers_match_torch_float32_loosely():
    torch.manual_seed(4)
    theirs = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
    ours = LSTM(8, 16, num_layers=2)
    load_torch_state_dict(ours, theirs.state_dict())
    x = np.random.default_rng(4).standard_normal((3, 20, 8)).astype(np.float32)
    out_o, _ = ours(tr.tensor(x))
    out_t, _ = theirs(torch.tensor(x))
    assert out_o.dtype == np.float32
    np.testing.assert_allclose(to_host(out_o), out_t.detach().numpy(), rtol=1e-4, atol=1e-5)
