"""The `ptb` recipe's `--large` model, built and trained for a few steps.

Its full run (40 epochs) takes hours on the project's CPU machine; this pins down that the
recipe builds the classic medium model and that its training step runs.
"""

from __future__ import annotations

import math

import numpy as np
from conftest import shared_data_path

from tinygrad_rnn.random import manual_seed
from tinygrad_rnn.train import Trainer
from tinygrad_rnn.train.recipes import Options, prepare


def test_ptb_large_builds_the_tied_2x650_model_and_its_training_steps_run():
    opts = Options(large=True, data=shared_data_path("ptb"), max_steps=3, quiet=True)
    prepared = prepare("ptb", opts)
    spec, config = prepared.spec, prepared.config
    assert (spec.num_layers, spec.hidden_size, spec.embedding_size) == (2, 650, 650)
    assert (spec.dropout, spec.tie_weights) == (0.5, True)
    assert (config.optimizer, config.lr, config.clip, config.epochs) == ("sgd", 20.0, 0.25, 40)
    assert config.eval_batch_size == 10  # the textbook's evaluation batch
    manual_seed(0)
    model = prepared.topology.build(spec)
    assert model.head.linear.weight is model.embedding.weight  # one tied parameter
    before = model.embedding.weight.numpy().copy()
    # A slice of the corpus: 3 steps of 20 lanes x 35, and a short validation pass.
    trainer = Trainer(
        prepared.topology, model, config, prepared.train[: 20 * 35 * 3 + 1], prepared.valid[:701]
    )
    trainer.fit()
    assert trainer.step == 3
    assert all(math.isfinite(loss) for loss in trainer.step_losses)
    assert math.isfinite(trainer.history[-1]["valid_perplexity"])
    assert not np.array_equal(model.embedding.weight.numpy(), before)
