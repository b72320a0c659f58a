"""End-to-end gradient checks through every built-in topology, in float64 at tiny sizes.

Two checks per model: every parameter's tape gradient of `topology.loss` against central
differences of the loss (`assert_parameter_gradients`), and, where inputs are values,
`tr.testing.gradcheck` with respect to the inputs (or the entering state). Truncated
backpropagation is checked against the objective it truly differentiates: the last chunk
with the carried state held constant.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from conftest import to_host

import tinygrad_rnn as tr
import topologies
from tinygrad_rnn.tensor import Tensor
from tinygrad_rnn.testing import gradcheck
from topologies import ModelSpec

EPS = 1e-6


def assert_parameter_gradients(
    model,
    loss: Callable[[], Tensor],
    objective: Callable[[], Tensor] | None = None,
    atol: float = 1e-7,
    rtol: float = 1e-5,
) -> None:
    """Tape gradients of `loss()` == central differences of `objective()` (default: `loss`).

    Every element of every parameter is nudged in place by +-EPS; the model must be float64.
    """
    objective = objective or loss
    model.zero_grad()
    loss().backward()
    checked = 0
    for name, p in model.named_parameters():
        assert p.dtype == np.float64, name
        analytic = to_host(p.grad) if p.grad is not None else np.zeros(p.shape)
        numeric = np.zeros(p.shape)
        for index in np.ndindex(*p.shape):
            original = p.data[index].item()
            p.data[index] = original + EPS
            with tr.no_grad():
                plus = objective().item()
            p.data[index] = original - EPS
            with tr.no_grad():
                minus = objective().item()
            p.data[index] = original
            numeric[index] = (plus - minus) / (2 * EPS)
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol, err_msg=name)
        checked += p.size
    assert checked > 0


def build(name: str, spec: ModelSpec, **options):
    tr.manual_seed(0)
    topology = topologies.create(name, **options)
    return topology, topology.build(spec)


def values_spec(cell: str = "lstm", **fields) -> ModelSpec:
    base = {"cell": cell, "hidden_size": 3, "input_size": 2, "output_size": 2, "dtype": "float64"}
    return ModelSpec(**{**base, **fields})


def token_spec(cell: str = "lstm", vocab: int = 5, **fields) -> ModelSpec:
    base = {
        "cell": cell,
        "hidden_size": 3,
        "vocab_size": vocab,
        "output_size": vocab,
        "embedding_size": 2,
        "head": "probabilities",
        "dtype": "float64",
    }
    return ModelSpec(**{**base, **fields})


VALUES = np.random.default_rng(7).standard_normal((2, 4, 2))  # (N, T, D)
IDS = np.random.default_rng(8).integers(0, 5, (2, 4))  # (N, T)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator per test: its data does not depend on which tests ran before."""
    return np.random.default_rng(9)


# ---- one-to-one ------------------------------------------------------------------------
def test_one_to_one_gradients(rng):
    topology, model = build("one-to-one", values_spec(), window=4)
    targets = rng.standard_normal((2, 2))
    assert_parameter_gradients(model, lambda: topology.loss(model, VALUES, targets).loss)
    gradcheck(lambda x: topology.loss(model, x, targets).loss, [VALUES])


def test_one_to_one_gradients_on_token_windows():
    topology, model = build("one-to-one", token_spec(), window=4)
    labels = np.array([1, 3])
    assert_parameter_gradients(model, lambda: topology.loss(model, IDS, labels).loss)


# ---- many-to-one ------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_many_to_one_gradients(cell, rng):
    topology, model = build("many-to-one", values_spec(cell, num_layers=2))
    targets = rng.standard_normal((2, 2))
    assert_parameter_gradients(model, lambda: topology.loss(model, VALUES, targets).loss)
    gradcheck(lambda x: topology.loss(model, x, targets).loss, [VALUES])


def test_many_to_one_gradients_classifying_token_sequences():
    topology, model = build("many-to-one", token_spec("gru", output_size=3))
    labels = np.array([2, 0])
    assert_parameter_gradients(model, lambda: topology.loss(model, IDS, labels).loss)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_many_to_one_time_size_differentiates_the_last_steps_from_a_constant_state(cell, rng):
    # T = 10, time_size 4: steps 0-5 only move the state forward; backward covers 6-9.
    topology, model = build("many-to-one", values_spec(cell), time_size=4)
    X = rng.standard_normal((2, 10, 2))
    targets = rng.standard_normal((2, 2))
    with tr.no_grad():
        _, carried = model.features(X[:, :6])

    def last_chunk_only() -> Tensor:
        # What truncated BPTT differentiates: the state entering the last 4 steps is a
        # constant (computed once, before any nudge).
        out, _ = model.features(X[:, 6:], carried)
        outputs = model.head(out[:, -1])
        return model.head.loss(outputs, tr.tensor(targets))

    with tr.no_grad():
        assert topology.loss(model, X, targets).loss.item() == pytest.approx(
            last_chunk_only().item(), rel=1e-12
        )
    assert_parameter_gradients(
        model, lambda: topology.loss(model, X, targets).loss, objective=last_chunk_only
    )
    # Inputs: the last chunk's get their true gradient; earlier steps get none.
    x = tr.tensor(X, requires_grad=True)
    topology.loss(model, x, targets).loss.backward()
    assert np.all(to_host(x.grad)[:, :6] == 0) and np.all(to_host(x.grad)[:, 6:] != 0)
    early = tr.tensor(X[:, :6])
    gradcheck(
        lambda last: topology.loss(model, tr.concatenate([early, last], axis=1), targets).loss,
        [X[:, 6:]],
    )


# ---- one-to-many ------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_one_to_many_gradients(cell, rng):
    spec = values_spec(cell, num_layers=2, extra={"condition_size": 3})
    topology, model = build("one-to-many", spec)
    condition = rng.standard_normal((2, 3))
    targets = rng.standard_normal((2, 4, 2))
    assert_parameter_gradients(model, lambda: topology.loss(model, condition, targets).loss)
    gradcheck(lambda c: topology.loss(model, c, targets).loss, [condition])


def test_one_to_many_gradients_generating_tokens(rng):
    topology, model = build("one-to-many", token_spec(extra={"condition_size": 3}), start_id=4)
    condition = rng.standard_normal((2, 3))
    assert_parameter_gradients(model, lambda: topology.loss(model, condition, IDS).loss)
    gradcheck(lambda c: topology.loss(model, c, IDS).loss, [condition])


# ---- seq2seq ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cell, options",
    [
        ("lstm", {}),
        ("lstm", {"peeky": True}),
        ("lstm", {"attention": True}),
        ("gru", {"peeky": True, "attention": True}),
        ("rnn", {"attention": True}),
    ],
    ids=["plain", "peeky", "attention", "gru-peeky-attention", "rnn-attention"],
)
def test_seq2seq_gradients(cell, options, rng):
    topology, model = build("seq2seq", token_spec(cell), **options)
    questions = rng.integers(0, 5, (2, 5))
    answers = rng.integers(0, 5, (2, 4))
    assert_parameter_gradients(model, lambda: topology.loss(model, questions, answers).loss)


# ---- synced -----------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_synced_gradients_for_a_language_model(cell, rng):
    topology, model = build("synced", token_spec(cell, num_layers=2))
    targets = rng.integers(0, 5, (2, 4))
    assert_parameter_gradients(model, lambda: topology.loss(model, IDS, targets).loss)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_synced_gradients_through_values_and_the_entering_state(cell, rng):
    topology, model = build("synced", values_spec(cell, num_layers=2))
    targets = rng.standard_normal((2, 4, 2))
    with tr.no_grad():
        _, state = model.features(rng.standard_normal((2, 3, 2)))
    state = [to_host(s) for s in ([state] if isinstance(state, Tensor) else state)]

    def with_state(*parts: Tensor):
        return parts[0] if len(parts) == 1 else tuple(parts)

    assert_parameter_gradients(
        model,
        lambda: topology.loss(model, VALUES, targets, with_state(*map(tr.tensor, state))).loss,
    )
    gradcheck(lambda x, *s: topology.loss(model, x, targets, with_state(*s)).loss, [VALUES, *state])


def test_stateless_synced_gradients_for_tagging(rng):
    topology, model = build("synced", token_spec("gru", output_size=2), stateful=False)
    tags = rng.integers(0, 2, (2, 4))
    assert_parameter_gradients(model, lambda: topology.loss(model, IDS, tags).loss)
