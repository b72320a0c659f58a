"""What a seq2seq decoder starts from: the encoder's final state, or only its h."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_data_path, to_host

import topologies


def encode(pass_cell_state: bool, cell: str = "lstm"):
    spec = topologies.ModelSpec(
        cell=cell,
        hidden_size=5,
        vocab_size=7,
        embedding_size=3,
        output_size=7,
        head="probabilities",
    )
    model = topologies.create("seq2seq", pass_cell_state=pass_cell_state).build(spec)
    questions = np.random.default_rng(0).integers(0, 7, (4, 6))
    encoder_out, encoder_state = model.encoder(model.enc_embedding(questions))
    return model.encode(questions), encoder_state


def test_the_lstm_decoder_gets_the_encoders_h_and_c_by_default():
    (_, (h, c)), (enc_h, enc_c) = encode(pass_cell_state=True)
    np.testing.assert_array_equal(to_host(h), to_host(enc_h))
    np.testing.assert_array_equal(to_host(c), to_host(enc_c))


def test_without_the_cell_state_the_decoder_starts_from_h_and_a_zero_cell():
    (_, (h, c)), (enc_h, enc_c) = encode(pass_cell_state=False)
    np.testing.assert_array_equal(to_host(h), to_host(enc_h))
    assert not np.any(to_host(c)) and np.any(to_host(enc_c))


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_cells_without_a_cell_state_are_unaffected(cell):
    (_, h), enc_h = encode(pass_cell_state=False, cell=cell)
    np.testing.assert_array_equal(to_host(h), to_host(enc_h))


def test_the_date_recipe_hands_over_only_h():
    from tinygrad_rnn.train.recipes import Options, prepare

    path = shared_data_path("seq2seq", "date.txt")
    prepared = prepare("date", Options(attention=True, data=path))
    assert prepared.topology.pass_cell_state is False
    addition = prepare("addition", Options(data=shared_data_path("seq2seq", "addition.txt")))
    assert addition.topology.pass_cell_state is True


def test_the_seq2seq_count_is_the_scored_answer_steps_and_summary_the_top_layer():
    """The start token is read, not scored: (6, 3) answers count 6 x 2. A peeky decoder's
    summary is the encoder's top layer's h."""
    import tinygrad_rnn as tr
    from topologies.seq2seq import _last_hidden

    topology = topologies.create("seq2seq")
    spec = topologies.ModelSpec(vocab_size=5, output_size=5, head="probabilities",
                                hidden_size=4, embedding_size=3)  # fmt: skip
    model = topology.build(spec)
    rng = np.random.default_rng(0)
    out = topology.loss(model, rng.integers(0, 5, (6, 4)), rng.integers(0, 5, (6, 3)))
    assert out.count == 12
    h = tr.tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 4))  # (layers, N, H)
    np.testing.assert_array_equal(_last_hidden((h, h * 0)).numpy(), h.numpy()[1])
