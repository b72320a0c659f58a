"""`tr.interop`: torch state dicts in and out, by PyTorch's parameter names.

Most checks need no torch (plain NumPy dicts and a duck-typed tensor stand in);
the round trip through a real `torch.nn.LSTM` runs where torch is installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_host

import tinygrad_rnn as tr
from tinygrad_rnn.interop import load_torch_state_dict, torch_state_dict
from tinygrad_rnn.nn.module import Module, Parameter
from tinygrad_rnn.nn.recurrent import GRU, LSTM, RNN, GRUCell


class FakeTorchTensor:
    """Quacks like a torch tensor: detach().cpu().numpy()."""

    def __init__(self, array):
        self.array = np.asarray(array)

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


class Affine(Module):
    """Any Module with its own names: the generic path."""

    def __init__(self):
        super().__init__()
        self.weight = Parameter(tr.tensor(np.zeros((2, 3), np.float32)).data)
        self.bias = Parameter(tr.tensor(np.zeros(2, np.float32)).data)


def test_load_accepts_numpy_and_duck_typed_tensors_and_keeps_dtype_and_backend():
    layer = GRU(3, 2, num_layers=2)
    rng = np.random.default_rng(0)
    state = {name: rng.standard_normal(p.shape) for name, p in layer.named_parameters()}
    state = {
        name: (FakeTorchTensor(v) if i % 2 else v) for i, (name, v) in enumerate(state.items())
    }
    backend = layer.weight_ih_l0.backend
    load_torch_state_dict(layer, state)
    for name, p in layer.named_parameters():
        value = state[name].array if isinstance(state[name], FakeTorchTensor) else state[name]
        assert p.dtype == np.float32 and p.backend == backend
        np.testing.assert_allclose(to_host(p), value.astype(np.float32))


def test_load_works_for_any_module_with_matching_names():
    module = Affine()
    load_torch_state_dict(module, {"weight": np.ones((2, 3)), "bias": FakeTorchTensor([1, 2])})
    np.testing.assert_array_equal(to_host(module.bias), [1, 2])
    assert torch_state_dict(module)["weight"].shape == (2, 3)


def test_load_errors_name_the_key_and_leave_the_module_untouched():
    layer = RNN(3, 2)
    before = layer.state_dict()
    good = {name: np.ones(p.shape) for name, p in layer.named_parameters()}
    missing = dict(good)
    del missing["bias_hh_l0"]
    with pytest.raises(KeyError, match=r"missing \['bias_hh_l0'\], unexpected \[\]"):
        load_torch_state_dict(layer, missing)
    extra = dict(good, weight_hr_l0=np.ones((2, 2)))
    with pytest.raises(KeyError, match=r"unexpected \['weight_hr_l0'\]"):
        load_torch_state_dict(layer, extra)
    wrong = dict(good, weight_hh_l0=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"'weight_hh_l0' expects shape \(2, 2\); got \(2, 3\)"):
        load_torch_state_dict(layer, wrong)
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_torch_state_dict_values_and_grads_under_torch_names():
    cell = GRUCell(2, 3)
    assert sorted(torch_state_dict(cell)) == ["bias_hh", "bias_ih", "weight_hh", "weight_ih"]
    assert all(v is None for v in torch_state_dict(cell, grads=True).values())
    h = cell(tr.tensor(np.ones((4, 2), np.float32)))
    h.sum().backward()
    grads = torch_state_dict(cell, grads=True)
    for name, p in cell.named_parameters():
        assert isinstance(grads[name], np.ndarray)
        np.testing.assert_array_equal(grads[name], to_host(p.grad))
    values = torch_state_dict(cell)
    values["weight_ih"][...] = 7.0  # a copy: the module is not changed
    assert not np.any(to_host(cell.weight_ih) == 7.0)
    grads["weight_ih"][...] = 7.0  # the gradients too
    assert not np.any(to_host(cell.weight_ih.grad) == 7.0)


def test_torch_round_trip_keeps_names_and_values():
    torch = pytest.importorskip("torch")
    pairs = (
        (
            torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True),
            LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64),
        ),
        (torch.nn.GRUCell(3, 4), GRUCell(3, 4)),
    )
    for theirs, ours in pairs:
        original = {k: v.clone() for k, v in theirs.state_dict().items()}
        load_torch_state_dict(ours, theirs.state_dict())
        back = torch_state_dict(ours)
        assert list(back) == list(original)  # torch -> ours -> torch: same names, same order
        with torch.no_grad():
            for p in theirs.parameters():
                p.zero_()
        theirs.load_state_dict({k: torch.from_numpy(v).float() for k, v in back.items()})
        for name, value in original.items():
            np.testing.assert_array_equal(theirs.state_dict()[name].numpy(), value.numpy())


class TiedPair(Module):
    """One parameter under two names, as a word LM's embedding and decoder."""

    def __init__(self):
        super().__init__()
        self.encoder = Parameter(tr.tensor(np.arange(6, dtype=np.float32).reshape(3, 2)).data)
        self.decoder = self.encoder


def test_a_tied_parameter_goes_out_under_each_of_its_names_and_comes_back():
    module = TiedPair()
    out = torch_state_dict(module)
    assert sorted(out) == ["decoder", "encoder"]
    np.testing.assert_array_equal(out["decoder"], out["encoder"])
    assert sorted(torch_state_dict(module, grads=True)) == ["decoder", "encoder"]
    back = TiedPair()
    load_torch_state_dict(back, {k: v * 2 for k, v in out.items()})
    np.testing.assert_array_equal(to_host(back.encoder), 2 * out["encoder"])


def test_a_tied_word_lm_loads_into_the_same_tied_torch_module():
    torch = pytest.importorskip("torch")
    import topologies

    spec = topologies.ModelSpec(cell="lstm", hidden_size=4, vocab_size=9, embedding_size=4,
                                output_size=9, head="probabilities", tie_weights=True)  # fmt: skip
    ours = topologies.create("synced").build(spec)
    state = torch_state_dict(ours)
    assert state["head.linear.weight"] is state["embedding.weight"]

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 9)

    class WordLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(9, 4)
            self.rnn = torch.nn.LSTM(4, 4, batch_first=True)
            self.head = Head()
            self.head.linear.weight = self.embedding.weight  # tied, as ours

    theirs = WordLM()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})  # strict
    np.testing.assert_array_equal(theirs.head.linear.weight.detach().numpy(),
                                  to_host(ours.embedding.weight))  # fmt: skip
    assert sorted(theirs.state_dict()) == sorted(state)


def test_load_refuses_bools_and_names_a_transposed_weight():
    rnn = RNN(3, 2)
    state = {k: np.zeros(v.shape, dtype=bool) for k, v in torch_state_dict(rnn).items()}
    with pytest.raises(TypeError, match="is not numeric"):
        load_torch_state_dict(rnn, state)
    state = {k: np.asarray(v).T.copy() if k == "weight_ih_l0" else v
             for k, v in torch_state_dict(rnn).items()}  # fmt: skip
    with pytest.raises(ValueError, match=r"'weight_ih_l0' expects shape \(2, 3\); got \(3, 2\)"):
        load_torch_state_dict(rnn, state)
