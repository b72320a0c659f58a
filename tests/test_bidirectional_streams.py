"""A stateful stream through a bidirectional layer is refused where streams are set up."""

from __future__ import annotations

import numpy as np
import pytest

import topologies
from tinygrad_rnn.train import TrainConfig, Trainer


def spec(**kw):
    return topologies.ModelSpec(
        cell="lstm",
        hidden_size=4,
        vocab_size=5,
        embedding_size=4,
        output_size=5,
        head="probabilities",
        bidirectional=True,
        **kw,
    )


def test_stateful_synced_refuses_a_bidirectional_model():
    with pytest.raises(ValueError, match="bidirectional"):
        topologies.create("synced").build(spec())


def test_trainer_refuses_a_bidirectional_model_on_a_stream():
    stateless = topologies.create("synced", stateful=False)
    model = stateless.build(spec())  # fine for independent windows
    stateful = topologies.create("synced")
    with pytest.raises(ValueError, match="bidirectional"):
        Trainer(stateful, model, TrainConfig(quiet=True), np.arange(200) % 5)


def test_bidirectional_many_to_one_reads_both_directions():
    topo = topologies.create("many-to-one")
    model = topo.build(topologies.ModelSpec(hidden_size=3, input_size=1, bidirectional=True))
    x = np.random.default_rng(0).standard_normal((2, 6, 1)).astype(np.float32)
    out = topo.loss(model, x, np.zeros((2, 1), np.float32))
    out.loss.backward()
    assert model.head.linear.weight.shape == (1, 6)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name,opts", [("seq2seq", {}), ("many-to-one", {"time_size": 3})])
def test_topologies_that_carry_state_refuse_bidirectional(name, opts):
    with pytest.raises(ValueError, match="bidirectional"):
        topologies.create(name, **opts).build(spec())
