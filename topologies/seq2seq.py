"""many-to-many encoder-decoder (seq2seq): input and output lengths differ."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.backend import get_array_module, to_host
from tinygrad_rnn.ops import concatenate
from tinygrad_rnn.tensor import Tensor

from .base import (
    Head,
    ModelSpec,
    StepOutput,
    Topology,
    apply_init,
    inference,
    make_recurrent,
    refuse_bidirectional,
    targets_like,
)
from .registry import register


def _last_hidden(state: Any) -> Tensor:
    """The top layer's h, (N, H), from a state h or (h, c) of shape (L, N, H)."""
    h = state[0] if isinstance(state, tuple) else state
    return h[-1]


class Seq2SeqModel(nn.Module):
    """Encoder RNN over the question, decoder RNN over the answer, one head per answer step.

    peeky: the encoder's final h joins every decoder input and the head's input.
    attention: dot-product attention of each decoder output over all encoder
    outputs; the context joins the head's input, as [context, h].
    spec.init "textbook": embeddings randn/100, weights randn/sqrt(fan_in), zero biases.
    """

    def __init__(
        self,
        spec: ModelSpec,
        peeky: bool,
        attention: bool,
        generator=None,
        pass_cell_state: bool = True,
    ):
        super().__init__()
        self.pass_cell_state = pass_cell_state
        if spec.vocab_size is None:
            raise ValueError("seq2seq works on token ids: set spec.vocab_size")
        H, E = spec.hidden_size, spec.embedding_size
        self.peeky, self.attention = peeky, attention
        self.enc_embedding = nn.Embedding(spec.vocab_size, E, dtype=spec.dtype, generator=generator)
        self.encoder = make_recurrent(spec, E, generator)
        self.dec_embedding = nn.Embedding(spec.vocab_size, E, dtype=spec.dtype, generator=generator)
        self.decoder = make_recurrent(spec, E + (H if peeky else 0), generator)
        self.head = Head(H * (1 + peeky + attention), spec, generator)
        # As RecurrentModel does: without it the layers keep PyTorch's defaults whatever
        # the spec says (the date and addition recipes ask for the textbook's).
        apply_init(self, spec, generator)

    def encode(self, questions: Any) -> tuple[Tensor, Any]:
        """(N, Tq) ids -> encoder outputs (N, Tq, H) and the decoder's start state.

        The decoder starts from the encoder's final state. With
        `pass_cell_state=False` an LSTM decoder gets only h and starts its cell
        state at zero, as in the textbook.
        """
        encoded, state = self.encoder(self.enc_embedding(questions))
        if isinstance(state, tuple) and not self.pass_cell_state:  # LSTM: (h, c)
            h, c = state
            state = (h, Tensor(get_array_module(c.data).zeros_like(c.data)))
        return encoded, state

    def decode(
        self, answers_in: Any, state: Any, encoded: Tensor, summary: Tensor
    ) -> tuple[Tensor, Any]:
        """(N, T) decoder input ids -> logits (N, T, V) and the decoder state."""
        x = self.dec_embedding(answers_in)
        N, T = x.shape[:2]
        peek = concatenate([summary.reshape(N, 1, -1)] * T, axis=1) if self.peeky else None
        if peek is not None:
            x = concatenate([x, peek], axis=2)
        out, state = self.decoder(x, state)
        features = [out]
        if self.attention:
            weights = (out @ encoded.transpose(0, 2, 1)).softmax(axis=-1)  # (N, T, Tq)
            features.insert(0, weights @ encoded)  # context (N, T, H)
        if peek is not None:
            features.append(peek)
        h = features[0] if len(features) == 1 else concatenate(features, axis=2)
        return self.head(h), state


@register("many-to-many-seq2seq", aliases=("seq2seq",))
class Seq2Seq(Topology):
    """Encoder-decoder whose input and output lengths differ (addition, date formats).

    inputs: question ids (N, Tq). targets: answer ids (N, Ta) whose first
    column is the start token (`_`); the decoder reads targets[:, :-1] and is
    scored on targets[:, 1:] (teacher forcing). Inference decodes greedily from
    the start token. Options: peeky, attention, pass_cell_state (False: an LSTM
    decoder gets only the encoder's h, its cell state starts at zero, as in the
    textbook). Reversing the input is a data option
    (`tr.data.load_seq2seq(..., reverse_input=True)`).
    """

    options = {"peeky": False, "attention": False, "pass_cell_state": True}
    count_unit = "answer tokens"

    def build(self, spec: ModelSpec, generator=None) -> Seq2SeqModel:
        refuse_bidirectional(spec, "in seq2seq (the decoder continues the encoder's state)")
        # What the model would otherwise take and quietly not do, or fail on much later.
        if spec.vocab_size is None or spec.head != "probabilities":
            raise ValueError(
                "seq2seq reads and writes token ids: it needs vocab_size and head="
                f"'probabilities'; got vocab_size={spec.vocab_size}, head={spec.head!r}"
            )
        if spec.output_size != spec.vocab_size:
            raise ValueError(
                "seq2seq feeds each predicted id back to the decoder: output_size must equal "
                f"vocab_size; got output_size={spec.output_size}, vocab_size={spec.vocab_size}"
            )
        if spec.tie_weights:
            raise ValueError("seq2seq does not tie weights: tie_weights must be False")
        if spec.dropout and spec.num_layers == 1:
            raise ValueError(
                f"seq2seq applies dropout between stacked layers only: dropout={spec.dropout} "
                "needs num_layers >= 2"
            )
        return Seq2SeqModel(
            spec, bool(self.peeky), bool(self.attention), generator, bool(self.pass_cell_state)
        )

    def check_data(self, inputs: Any, targets: Any) -> None:
        self.require(
            inputs.ndim == 2 and targets.ndim == 2 and len(inputs) == len(targets),
            f"seq2seq takes question ids (N, Tq) and answer ids (N, Ta); got {inputs.shape} "
            f"and {targets.shape}",
        )
        self.require(targets.shape[1] >= 2, "seq2seq answers need a start token and >= 1 step")
        self.require(
            np.asarray(inputs[:1]).dtype.kind in "iu"
            and np.asarray(targets[:1]).dtype.kind in "iu",
            "seq2seq takes integer token ids",
        )

    def loss(self, model: Seq2SeqModel, inputs: Any, targets: Any, state: Any = None) -> StepOutput:
        encoded, enc_state = model.encode(inputs)
        logits, _ = model.decode(targets[:, :-1], enc_state, encoded, _last_hidden(enc_state))
        loss = model.head.loss(logits, targets_like(targets[:, 1:], logits))
        return StepOutput(loss, None, int(targets.shape[0] * (targets.shape[1] - 1)), logits)

    def batch_metrics(
        self, model: Seq2SeqModel, inputs: Any, targets: Any, out: StepOutput
    ) -> dict[str, tuple[Any, int]]:
        """Exact match of the greedy decode over the whole answer string."""
        answers = to_host(targets)
        decoded, _ = self.predict(
            model, inputs, length=answers.shape[1] - 1, start_id=answers[:, 0]
        )
        exact = (decoded == answers[:, 1:]).all(axis=1)
        return {"accuracy": (int(exact.sum()), len(exact))}

    def predict(
        self,
        model: Seq2SeqModel,
        inputs: Any,
        state: Any = None,
        length: int = 1,
        start_id: int | np.ndarray = 0,
    ) -> tuple[np.ndarray, Any]:
        """Greedy decoding: ids (N, length) on the host, starting from `start_id`.

        start_id: one id for every row, or N ids (the answers' first column).
        Runs in eval mode without a tape; the model's modes are restored.
        """
        if length < 0:
            raise ValueError(f"seq2seq: length must be >= 0; got {length}")
        with inference(model):
            encoded, state = model.encode(inputs)
            summary = _last_hidden(state)
            xp = get_array_module(encoded.data)
            N = encoded.shape[0]
            first = np.broadcast_to(to_host(start_id).astype(np.int64), (N,))
            current = xp.asarray(first)[:, None]
            steps = []
            for _ in range(length):
                logits, state = model.decode(current, state, encoded, summary)
                current = logits.data[:, -1].argmax(axis=-1)[:, None]
                steps.append(current)
            ids = xp.concatenate(steps, axis=1) if steps else xp.zeros((N, 0), np.int64)
        return (ids.get() if hasattr(ids, "get") else ids), None
