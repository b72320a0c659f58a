"""`ModelSpec.init="textbook"` and `ModelSpec.dropout` reach every layer of every built-in
topology, including the layers a topology adds of its own (one-to-many's initial-state
Linear, one-to-one's hidden Linear)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import to_host

import tinygrad_rnn as tr
import topologies
from tinygrad_rnn import nn

H, E, V, P, T = 64, 48, 50, 40, 6

BUILDS = {
    "one-to-one": ({"window": T}, {"input_size": 40}),
    "one-to-many": ({}, {"vocab_size": V, "embedding_size": E, "extra": {"condition_size": P}}),
    "many-to-one": ({}, {"input_size": 40}),
    "many-to-many-synced": ({}, {"vocab_size": V, "embedding_size": E}),
    "many-to-many-seq2seq": ({"attention": True}, {"vocab_size": V, "embedding_size": E}),
}


def build(name: str, init: str, dropout: float = 0.0):
    options, fields = BUILDS[name]
    spec = topologies.ModelSpec(
        cell="lstm", hidden_size=H, output_size=V, head="probabilities", init=init,
        dropout=dropout, **fields,
    )  # fmt: skip
    tr.manual_seed(0)
    return topologies.create(name, **options).build(spec)


@pytest.mark.parametrize("name", list(BUILDS))
def test_textbook_init_reaches_every_parameter(name):
    model = build(name, "textbook")
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for pname, param in model.named_parameters():
        values = to_host(param)
        if values.ndim == 1:
            assert not values.any(), f"{name}: bias {pname} is not zero"
        elif id(param) in embeddings:
            assert values.std() == pytest.approx(0.01, rel=0.15), pname
        else:
            expected = 1 / math.sqrt(values.shape[-1])
            assert values.std() == pytest.approx(expected, rel=0.15), f"{name}: {pname}"


def test_one_to_one_applies_dropout_in_training_only():
    model = build("one-to-one", "pytorch", dropout=0.5)
    x = tr.tensor(np.random.default_rng(1).standard_normal((8, T, 40)).astype(np.float32))
    model.train()
    first, second = to_host(model(x)), to_host(model(x))
    assert not np.allclose(first, second)  # a fresh mask each call
    model.eval()
    np.testing.assert_array_equal(to_host(model(x)), to_host(model(x)))
    plain = build("one-to-one", "pytorch")
    assert plain.dropout is None
