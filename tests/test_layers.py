"""Linear, Embedding, Dropout and the init helpers: shapes, init, gradients, ties.

Gradients are checked against float64 finite differences (`gradcheck`) and,
where torch is installed, values and gradients against torch.nn.functional.
Inputs are made with `tr.tensor(host)` so the file runs on either backend.
"""

import math

import numpy as np
import pytest
from conftest import to_host
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn import nn
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn import init
from tinygrad_rnn.testing import gradcheck


def host(a):
    """A NumPy copy of a Tensor or a raw NumPy/CuPy array (such as `.grad`)."""
    return to_host(a if isinstance(a, tr.Tensor) else tr.Tensor(a))


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---- Linear -------------------------------------------------------------------
def test_linear_weight_is_out_by_in_with_pytorch_default_bound():
    layer = nn.Linear(50, 7, generator=_rng())
    assert layer.weight.shape == (7, 50) and layer.bias.shape == (7,)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    bound = 1 / math.sqrt(50)
    for p in (layer.weight, layer.bias):
        values = host(p)
        assert np.all(np.abs(values) <= bound)
    # Uniform on [-b, b] has std b/sqrt(3); 350 draws land close to it.
    assert abs(host(layer.weight).std() - bound / math.sqrt(3)) < 0.2 * bound


def test_linear_without_bias_and_in_float64():
    layer = nn.Linear(3, 2, bias=False, dtype=np.float64)
    assert layer.bias is None and layer.parameters() == [layer.weight]
    assert layer.weight.dtype == np.float64


def test_a_generator_makes_init_reproducible_and_backend_independent():
    a = nn.Linear(4, 3, generator=_rng(5))
    b = nn.Linear(4, 3, generator=_rng(5))
    np.testing.assert_array_equal(host(a.weight), host(b.weight))
    # Drawn on the host in float64, then cast: exactly these numbers on any backend.
    drawn = _rng(5).uniform(-0.5, 0.5, size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(host(a.weight), drawn)


@settings(deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    in_features=st.integers(1, 4),
    out_features=st.integers(1, 4),
    bias=st.booleans(),
)
def test_linear_maps_any_leading_shape_and_is_one_tape_entry(lead, in_features, out_features, bias):
    layer = nn.Linear(in_features, out_features, bias=bias, dtype=np.float64, generator=_rng())
    x_host = _rng(1).standard_normal((*lead, in_features))
    x = tr.tensor(x_host, requires_grad=True)
    y = layer(x)
    expected = x_host @ host(layer.weight).T
    if bias:
        expected = expected + host(layer.bias)
    assert y.shape == (*lead, out_features)
    np.testing.assert_allclose(host(y), expected, rtol=1e-12, atol=1e-12)
    assert [entry.op for entry in y.tape()] == ["linear"]


@settings(deadline=None, max_examples=10)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    in_features=st.integers(1, 3),
    out_features=st.integers(1, 3),
)
def test_linear_gradients_match_finite_differences(lead, in_features, out_features):
    rng = _rng(2)
    x = rng.standard_normal((*lead, in_features))
    w = rng.standard_normal((out_features, in_features))
    b = rng.standard_normal(out_features)
    assert gradcheck(F.linear, [x, w, b])
    assert gradcheck(lambda x, w: F.linear(x, w), [x, w])


def test_linear_matches_torch_values_and_grads():
    torch = pytest.importorskip("torch")
    layer = nn.Linear(5, 4, dtype=np.float64, generator=_rng())
    x_host = _rng(3).standard_normal((2, 3, 5))
    upstream = _rng(4).standard_normal((2, 3, 4))
    x = tr.tensor(x_host, requires_grad=True)
    y = layer(x)
    y.backward(tr.tensor(upstream).data)

    tx = torch.tensor(x_host, requires_grad=True)
    tw = torch.tensor(host(layer.weight), requires_grad=True)
    tb = torch.tensor(host(layer.bias), requires_grad=True)
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.tensor(upstream))
    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-12)
    for ours, theirs in ((x, tx), (layer.weight, tw), (layer.bias, tb)):
        np.testing.assert_allclose(host(ours.grad), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_linear_rejects_a_wrong_feature_size_or_dtype():
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"in_features=3.*\(4, 5\)"):
        layer(tr.tensor(np.zeros((4, 5), np.float32)))
    with pytest.raises(TypeError, match="float64.*float32"):
        layer(tr.tensor(np.zeros((4, 3), np.float64)))
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 2)


class _TiedLanguageModel(nn.Module):
    def __init__(self, vocab, dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, dtype=np.float64, generator=_rng(7))
        self.decoder = nn.Linear(dim, vocab, dtype=np.float64, generator=_rng(8))
        self.decoder.weight = self.embedding.weight

    def forward(self, ids):
        return self.decoder(self.embedding(ids))


def test_tied_weights_are_one_parameter_listed_once_and_updated_once():
    model = _TiedLanguageModel(6, 4)
    assert model.decoder.weight is model.embedding.weight
    assert len(model.parameters()) == 2  # the shared weight and the decoder bias
    ids = np.array([[1, 2, 2], [5, 0, 1]])
    loss = F.softmax_cross_entropy(model(ids), ids)
    loss.backward()
    shared = model.embedding.weight
    before = host(shared).copy()
    grad = host(shared.grad).copy()
    tr.optim.SGD(model.parameters(), lr=0.5).step()
    np.testing.assert_allclose(host(shared), before - 0.5 * grad, rtol=1e-12)
    np.testing.assert_array_equal(host(model.decoder.weight), host(shared))


def test_tied_weight_gradient_sums_both_uses_as_torch_does():
    torch = pytest.importorskip("torch")
    model = _TiedLanguageModel(6, 4)
    ids = np.array([[1, 2, 2], [5, 0, 1]])
    F.softmax_cross_entropy(model(ids), ids).backward()

    weight = torch.tensor(host(model.embedding.weight), requires_grad=True)
    bias = torch.tensor(host(model.decoder.bias))
    tids = torch.tensor(ids)
    logits = torch.nn.functional.linear(torch.nn.functional.embedding(tids, weight), weight, bias)
    torch.nn.functional.cross_entropy(logits.reshape(-1, 6), tids.reshape(-1)).backward()
    ours = host(model.embedding.weight.grad)
    np.testing.assert_allclose(ours, weight.grad.numpy(), rtol=1e-10)


# ---- Embedding ----------------------------------------------------------------
def test_embedding_weight_is_standard_normal_and_float32():
    emb = nn.Embedding(200, 50, generator=_rng())
    values = host(emb.weight)
    assert values.shape == (200, 50) and values.dtype == np.float32
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1) < 0.05


@pytest.mark.parametrize("kind", ["array", "list", "tensor"])
def test_embedding_takes_ids_of_any_shape_in_any_container(kind):
    emb = nn.Embedding(10, 3, generator=_rng())
    ids_host = np.array([[[1, 2]], [[9, 0]]])
    ids = {"array": ids_host, "list": ids_host.tolist(), "tensor": tr.tensor(ids_host)}[kind]
    out = emb(ids)
    assert out.shape == (2, 1, 2, 3)
    np.testing.assert_array_equal(host(out), host(emb.weight)[ids_host])
    assert [entry.op for entry in out.tape()] == ["embedding"]


@pytest.mark.parametrize("bad", [10, 13, -1])
def test_embedding_names_the_out_of_range_id(bad):
    emb = nn.Embedding(10, 3)
    with pytest.raises(IndexError, match=rf"id {bad} .*num_embeddings=10"):
        emb(np.array([[0, bad, 2]]))


def test_embedding_rejects_float_ids():
    with pytest.raises(TypeError, match="integers"):
        nn.Embedding(10, 3)(np.array([1.0, 2.0]))


def test_repeated_ids_sum_their_gradients():
    emb = nn.Embedding(5, 2, dtype=np.float64)
    out = emb(np.array([3, 1, 3, 3]))
    upstream = np.arange(8, dtype=np.float64).reshape(4, 2)
    out.backward(tr.tensor(upstream).data)
    expected = np.zeros((5, 2))
    expected[3] = upstream[0] + upstream[2] + upstream[3]
    expected[1] = upstream[1]
    np.testing.assert_array_equal(host(emb.weight.grad), expected)


@settings(deadline=None, max_examples=10)
@given(ids=st.lists(st.integers(0, 3), min_size=1, max_size=6), dim=st.integers(1, 3))
def test_embedding_gradients_match_finite_differences(ids, dim):
    weight = _rng(3).standard_normal((4, dim))
    ids = np.array(ids).reshape(1, -1)  # repeats are likely with 4 ids
    assert gradcheck(lambda w: F.embedding(ids, w), [weight])


def test_embedding_matches_torch_values_and_grads():
    torch = pytest.importorskip("torch")
    emb = nn.Embedding(7, 3, dtype=np.float64, generator=_rng())
    ids = np.array([[1, 6, 1], [0, 1, 6]])
    upstream = _rng(2).standard_normal((2, 3, 3))
    out = emb(ids)
    out.backward(tr.tensor(upstream).data)
    tw = torch.tensor(host(emb.weight), requires_grad=True)
    tout = torch.nn.functional.embedding(torch.tensor(ids), tw)
    tout.backward(torch.tensor(upstream))
    np.testing.assert_array_equal(host(out), tout.detach().numpy())
    np.testing.assert_allclose(host(emb.weight.grad), tw.grad.numpy(), rtol=1e-12)


# ---- Dropout ------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 1.0, -0.1, 1.5, "0.5", True])
def test_dropout_probability_must_be_in_zero_one(p):
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(p)


def test_dropout_is_identity_in_eval_mode_and_for_p_zero():
    x = tr.tensor(np.ones((3, 4), np.float32), requires_grad=True)
    layer = nn.Dropout(0.5)
    layer.eval()
    assert layer(x) is x
    assert nn.Dropout(0.0)(x) is x


def test_dropout_mask_is_inverted_and_keeps_about_one_minus_p():
    p = 0.3
    x = tr.tensor(np.ones((200, 100), np.float32), requires_grad=True)
    y = nn.Dropout(p, generator=_rng())(x)
    values = host(y)
    assert set(np.unique(values).tolist()) <= {0.0, np.float32(1 / (1 - p))}
    assert abs((values > 0).mean() - (1 - p)) < 0.02
    y.backward(tr.tensor(np.ones((200, 100), np.float32)).data)
    np.testing.assert_array_equal(host(x.grad), values)  # the gradient is the mask
    assert [entry.op for entry in y.tape()] == ["dropout"]


def test_dropout_masks_follow_the_seed():
    x = tr.tensor(np.ones((8, 8), np.float32))
    tr.manual_seed(11)
    first = host(nn.Dropout(0.5)(x))
    second = host(nn.Dropout(0.5)(x))
    tr.manual_seed(11)
    again = host(nn.Dropout(0.5)(x))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    layer_mask = host(nn.Dropout(0.5, generator=_rng(4))(x))
    np.testing.assert_array_equal(layer_mask, host(F.dropout(x, 0.5, generator=_rng(4))))


@settings(deadline=None, max_examples=10)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=2), p=st.floats(0.0, 0.9))
def test_dropout_gradient_with_a_fixed_mask_matches_finite_differences(shape, p):
    mask = F.dropout_mask(tuple(shape), p, np.float64, _rng(1))
    x = _rng(2).standard_normal(shape)
    assert gradcheck(lambda x: F.dropout(x, p, mask=mask), [x])
    assert gradcheck(lambda x: F.dropout(x, p, generator=np.random.default_rng(3)), [x])


# ---- init ---------------------------------------------------------------------
def _param(shape, dtype=np.float32):
    return nn.Parameter(tr.tensor(np.zeros(shape, dtype)).data)


def test_init_helpers_fill_in_place_from_host_draws():
    p = _param((3, 4))
    buffer = p.data
    assert init.uniform_(p, 0.5, _rng(1)) is p and p.data is buffer
    np.testing.assert_array_equal(host(p), _rng(1).uniform(-0.5, 0.5, (3, 4)).astype(np.float32))
    init.normal_(p, 2.0, _rng(1))
    np.testing.assert_array_equal(
        host(p), (_rng(1).standard_normal((3, 4)) * 2.0).astype(np.float32)
    )
    init.zeros_(p)
    assert not host(p).any()


def test_xavier_like_is_randn_over_sqrt_fan_in():
    p = _param((300, 400))
    init.xavier_like_(p, generator=_rng())
    assert abs(host(p).std() - 1 / math.sqrt(400)) < 0.002
    with pytest.raises(ValueError, match="fan_in"):
        init.xavier_like_(_param((5,)))
    init.xavier_like(_param((5,)), fan_in=25)


def test_textbook_init_uses_embedding_rows_over_100_and_zero_biases():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(400, 100)
            self.decoder = nn.Linear(100, 50)

    model = init.textbook_init_(Model(), _rng())
    assert abs(host(model.embedding.weight).std() - 0.01) < 0.001
    assert abs(host(model.decoder.weight).std() - 0.1) < 0.01
    assert not host(model.decoder.bias).any()


def test_textbook_init_gives_a_tied_weight_the_first_holders_rule_once():
    """An embedding tied to a decoder keeps the embedding's randn/100: the decoder's
    randn/sqrt(fan_in) must not overwrite it."""

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(400, 100)
            self.decoder = nn.Linear(100, 400)
            self.decoder.weight = self.embedding.weight

    model = init.textbook_init_(Tied(), _rng())
    assert model.decoder.weight is model.embedding.weight
    assert abs(host(model.embedding.weight).std() - 0.01) < 0.001


def test_forget_bias_sets_the_forget_rows_of_every_lstm_and_nothing_else():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = nn.LSTM(3, 4, num_layers=2, bidirectional=True, generator=_rng(0))
            self.cell = nn.LSTMCell(3, 5, generator=_rng(1))
            self.gru = nn.GRU(3, 4, generator=_rng(2))

    model = Model()
    before = {name: host(p).copy() for name, p in model.named_parameters()}
    assert init.forget_bias_(model, 1.5) is model
    for name, param in model.named_parameters():
        value, old = host(param), before[name]
        if name.startswith(("stack.bias", "cell.bias")):
            H = value.shape[0] // 4
            forget = slice(H, 2 * H)  # PyTorch's gate order: i, f, g, o
            assert np.all(value[forget] == (1.5 if "bias_ih" in name else 0.0)), name
            outside = np.r_[0:H, 2 * H : 4 * H]
            np.testing.assert_array_equal(value[outside], old[outside], err_msg=name)
        else:  # weights, and the GRU (no forget gate), are left as they were
            np.testing.assert_array_equal(value, old, err_msg=name)


def test_forget_bias_lands_on_the_gate_that_keeps_the_cell_state():
    # Zero weights and biases but the forget gate's: the candidate g = tanh(0) = 0, so
    # each step only scales c by sigmoid(bias), and T steps give sigmoid(bias)**T c0.
    lstm = nn.LSTM(2, 3, dtype="float64")
    for param in lstm.parameters():
        init.zeros_(param)
    init.forget_bias_(lstm, 2.0)
    c0 = tr.tensor(np.array([[[0.5, -1.0, 2.0]]]))
    h0 = tr.tensor(np.zeros((1, 1, 3)))
    _, (_, c) = lstm(tr.tensor(np.zeros((1, 4, 2))), (h0, c0))
    keep = 1 / (1 + math.exp(-2.0))
    np.testing.assert_allclose(host(c), keep**4 * host(c0), rtol=1e-12)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1", True])
def test_forget_bias_names_a_bad_value(bad):
    with pytest.raises(ValueError, match=r"forget_bias_: value must be a finite number; got"):
        init.forget_bias_(nn.LSTM(2, 3), bad)


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_with_its_bias_folded_into_the_matmul_matches_finite_differences(seed):
    """Outputs of 2**20 elements or more take [x | 1] @ [W | b].T, a path no small check
    reaches. Too big for an element-by-element gradcheck: the value, and each input's
    gradient against a central difference along a random direction (exact up to
    rounding, the op being linear in each argument)."""
    M, D, H = 1024, 3, 1024
    assert F._folds_bias(M, D, H)
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((M, D)), rng.standard_normal((H, D)), rng.standard_normal(H)
    u = rng.standard_normal((M, H))
    leaves = [tr.tensor(a, requires_grad=True) for a in (x, w, b)]
    y = F.linear(*leaves)
    np.testing.assert_allclose(y.numpy(), x @ w.T + b, rtol=1e-12, atol=1e-12)
    y.backward(u)

    def objective(*args):
        with tr.no_grad():
            return float((F.linear(*[tr.tensor(a) for a in args]).numpy() * u).sum())

    eps = 1e-3
    for k, leaf in enumerate(leaves):
        v = rng.standard_normal(leaf.shape)
        plus = [a + eps * v if i == k else a for i, a in enumerate((x, w, b))]
        minus = [a - eps * v if i == k else a for i, a in enumerate((x, w, b))]
        numeric = (objective(*plus) - objective(*minus)) / (2 * eps)
        analytic = float((to_host(leaf.grad) * v).sum())
        assert analytic == pytest.approx(numeric, rel=1e-7, abs=1e-6), ["x", "w", "b"][k]
