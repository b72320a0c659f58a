"""The two hidden-state policies.

Stateful (synced): the state a batch returns is carried into the next one cut from the
graph. Its values continue the previous batch exactly, but backward of the next batch
stops at the cut. Stateless: every batch starts from a zero state, so a batch's loss
does not depend on the batches before it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_host
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tr
import topologies
from tinygrad_rnn.tensor import GraphReleasedError, Tensor
from tinygrad_rnn.train import TrainConfig, Trainer
from topologies import CELLS, ModelSpec, detach_state


def parts(state) -> list[Tensor]:
    return [state] if isinstance(state, Tensor) else list(state)


def token_model(cell: str, num_layers: int = 1, vocab: int = 6, dtype: str = "float64"):
    tr.manual_seed(0)
    topology = topologies.create("synced")
    spec = ModelSpec(
        cell=cell,
        hidden_size=5,
        vocab_size=vocab,
        output_size=vocab,
        embedding_size=3,
        num_layers=num_layers,
        head="probabilities",
        dtype=dtype,
    )
    return topology, topology.build(spec)


def token_batches(N: int, T: int, vocab: int = 6, seed: int = 0):
    """Two consecutive batches of a stream split in N lanes: (x1, t1), (x2, t2), each (N, T)."""
    lanes = np.random.default_rng(seed).integers(0, vocab, (N, 2 * T + 1))
    x, t = lanes[:, :-1], lanes[:, 1:]
    return (x[:, :T], t[:, :T]), (x[:, T:], t[:, T:])


def grads(model) -> dict[str, np.ndarray]:
    return {name: to_host(p.grad) for name, p in model.named_parameters()}


# ---- stateful: cut from the graph, values carried ---------------------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_carried_state_is_a_leaf_without_tape(cell):
    topology, model = token_model(cell, num_layers=2)
    (x1, t1), _ = token_batches(3, 4)
    out = topology.loss(model, x1, t1)
    assert all(len(s.tape()) > 0 for s in parts(out.state))  # before the cut: a history
    carried = detach_state(out.state)
    assert type(carried) is type(out.state)
    for before, after in zip(parts(out.state), parts(carried)):
        assert after.is_leaf and not after.requires_grad and after.tape() == []
        np.testing.assert_array_equal(to_host(after), to_host(before))


@pytest.mark.parametrize("cell", CELLS)
def test_backward_of_the_next_batch_stops_at_the_cut(cell):
    topology, model = token_model(cell, num_layers=2)
    (x1, t1), (x2, t2) = token_batches(3, 4)
    first = topology.loss(model, x1, t1)
    first.loss.backward()  # releases batch 1's tape, as a training step does
    model.zero_grad()
    carried = detach_state(first.state)
    topology.loss(model, x2, t2, carried).loss.backward()  # no GraphReleasedError
    through_cut = grads(model)
    # The same batch from a fresh constant holding the same values: the same gradients.
    model.zero_grad()
    constant = (
        type(carried)(Tensor(s.data.copy()) for s in carried)
        if isinstance(carried, tuple)
        else Tensor(carried.data.copy())
    )
    topology.loss(model, x2, t2, constant).loss.backward()
    fresh = grads(model)
    for name in fresh:
        np.testing.assert_allclose(through_cut[name], fresh[name], rtol=1e-12, err_msg=name)


def test_without_the_cut_backward_reaches_the_released_batch():
    # Why the state is cut: carried with its history, the next backward walks into the
    # previous batch's tape, which its own backward already released.
    topology, model = token_model("lstm")
    (x1, t1), (x2, t2) = token_batches(3, 4)
    first = topology.loss(model, x1, t1)
    first.loss.backward()
    with pytest.raises(GraphReleasedError):
        topology.loss(model, x2, t2, first.state).loss.backward()


@settings(deadline=None)
@given(
    cell=st.sampled_from(CELLS),
    num_layers=st.integers(1, 2),
    N=st.integers(1, 3),
    T=st.integers(1, 5),
    tokens=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_carried_state_equals_one_long_pass(cell, num_layers, N, T, tokens, seed):
    """Batch k then batch k+1 from the carried state == one pass over the 2T steps (float64)."""
    tr.manual_seed(1)
    topology = topologies.create("synced")
    if tokens:
        spec = ModelSpec(
            cell=cell,
            hidden_size=4,
            vocab_size=5,
            output_size=5,
            embedding_size=3,
            num_layers=num_layers,
            head="probabilities",
            dtype="float64",
        )
        x = np.random.default_rng(seed).integers(0, 5, (N, 2 * T + 1))
        inputs, targets = x[:, :-1], x[:, 1:]
    else:
        spec = ModelSpec(
            cell=cell,
            hidden_size=4,
            input_size=2,
            output_size=2,
            num_layers=num_layers,
            dtype="float64",
        )
        x = np.random.default_rng(seed).standard_normal((N, 2 * T + 1, 2))
        inputs, targets = x[:, :-1], x[:, 1:]
    model = topology.build(spec)
    first = topology.loss(model, inputs[:, :T], targets[:, :T])
    second = topology.loss(model, inputs[:, T:], targets[:, T:], detach_state(first.state))
    whole = topology.loss(model, inputs, targets)
    pieces = np.concatenate([to_host(first.outputs), to_host(second.outputs)], axis=1)
    np.testing.assert_allclose(pieces, to_host(whole.outputs), rtol=1e-12, atol=1e-12)
    for a, b in zip(parts(second.state), parts(whole.state)):
        np.testing.assert_allclose(to_host(a), to_host(b), rtol=1e-12, atol=1e-12)
    # The losses are means over each batch's steps: the halves average to the whole.
    halves = (first.loss.item() + second.loss.item()) / 2
    assert halves == pytest.approx(whole.loss.item(), rel=1e-12, abs=1e-12)


def spy_on_states(topology) -> list:
    """Record (state passed in, state returned) for every loss call of `topology`."""
    seen = []
    original = topology.loss

    def loss(model, inputs, targets, state=None):
        out = original(model, inputs, targets, state)
        seen.append((state, out.state))
        return out

    topology.loss = loss
    return seen


def test_the_trainer_carries_each_batch_state_cut_and_resets_at_epoch_start():
    topology, model = token_model("gru", dtype="float32")
    stream = np.random.default_rng(0).integers(0, 6, 400)
    config = TrainConfig(epochs=2, batch_size=4, time_size=10, quiet=True)
    trainer = Trainer(topology, model, config, stream)
    seen = spy_on_states(topology)
    trainer.fit()
    per_epoch = len(trainer.loader)
    assert len(seen) == 2 * per_epoch
    for k, (given_state, _) in enumerate(seen):
        if k % per_epoch == 0:
            assert given_state is None, f"batch {k} starts an epoch: fresh state"
            continue
        previous = seen[k - 1][1]
        for a, b in zip(parts(given_state), parts(previous)):
            assert a.is_leaf and not a.requires_grad and a.tape() == []
            np.testing.assert_array_equal(to_host(a), to_host(b))


# ---- stateless: every batch from a zero state --------------------------------------------
def stateless_cases():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, (23, 7))
    values = rng.standard_normal((23, 7, 1)).astype(np.float32)
    synced = topologies.create("synced", stateful=False)
    m2o = topologies.create("many-to-one", time_size=3)
    tr.manual_seed(0)
    return [
        (
            synced,
            synced.build(
                ModelSpec(
                    cell="lstm",
                    hidden_size=5,
                    vocab_size=6,
                    output_size=6,
                    embedding_size=3,
                    head="probabilities",
                )
            ),
            (ids, ids),
        ),
        (
            m2o,
            m2o.build(ModelSpec(cell="gru", hidden_size=5, input_size=1)),
            (values, values[:, -1]),
        ),
    ]


@pytest.mark.parametrize("case", range(2), ids=["synced-stateless", "many-to-one"])
def test_stateless_batches_start_from_zero_and_carry_nothing(case):
    topology, model, data = stateless_cases()[case]
    assert not topology.stateful
    seen = spy_on_states(topology)
    trainer = Trainer(topology, model, TrainConfig(epochs=2, batch_size=5, quiet=True), data, data)
    trainer.fit()
    assert seen and all(given_state is None and returned is None for given_state, returned in seen)


@pytest.mark.parametrize("case", range(2), ids=["synced-stateless", "many-to-one"])
def test_stateless_loss_does_not_depend_on_the_previous_batch(case):
    topology, model, (X, Y) = stateless_cases()[case]
    alone = topology.loss(model, X[10:15], Y[10:15]).loss.item()
    after = topology.loss(model, X[:10], Y[:10])
    assert after.state is None
    again = topology.loss(model, X[10:15], Y[10:15], after.state).loss.item()
    assert again == pytest.approx(alone, rel=1e-6)
    # So evaluation is a plain mean over samples, whatever the batching (23 samples:
    # every batch size below leaves a smaller last batch).
    trainer = Trainer(topology, model, TrainConfig(quiet=True), (X, Y))
    losses = [trainer.evaluate((X, Y), batch_size=b)["loss"] for b in (4, 5, 23)]
    np.testing.assert_allclose(losses, losses[-1], rtol=1e-5)
