"""one-to-one: no recurrence, a feed-forward baseline on the same windows."""

from __future__ import annotations

from typing import Any

from tinygrad_rnn import nn
from tinygrad_rnn.tensor import Tensor

from .base import (
    Head,
    ModelSpec,
    StepOutput,
    Topology,
    apply_init,
    as_values,
    inference,
    targets_like,
)
from .registry import register


class FeedForward(nn.Module):
    """Flattened window (N, T*D) -> Linear -> tanh -> (dropout) -> head. Token ids are
    embedded first. spec.init and spec.dropout apply as in RecurrentModel."""

    def __init__(self, spec: ModelSpec, window: int, generator=None):
        super().__init__()
        self.window = window
        self.dtype = spec.dtype
        self.embedding = None
        if spec.vocab_size is not None:
            self.embedding = nn.Embedding(
                spec.vocab_size, spec.embedding_size, dtype=spec.dtype, generator=generator
            )
        self.hidden = nn.Linear(
            window * spec.step_input_size, spec.hidden_size, dtype=spec.dtype, generator=generator
        )
        self.dropout = nn.Dropout(spec.dropout, generator=generator) if spec.dropout else None
        self.head = Head(spec.hidden_size, spec, generator)
        apply_init(self, spec, generator)

    def forward(self, inputs: Any) -> Tensor:
        x = self.embedding(inputs) if self.embedding is not None else as_values(inputs, self.dtype)
        if x.shape[1] != self.window:
            raise ValueError(
                f"one-to-one was built for windows of {self.window} steps; got {x.shape[1]}"
            )
        hidden = self.hidden(x.reshape(x.shape[0], -1)).tanh()
        if self.dropout is not None:  # on the hidden layer, as between recurrent layers
            hidden = self.dropout(hidden)
        return self.head(hidden)


@register("one-to-one", aliases=("feedforward",))
class OneToOne(Topology):
    """No recurrence: a feed-forward network on the flattened window, as a baseline.

    Same data as many-to-one: inputs (N, T, D) or ids (N, T); targets (N, F),
    (N, 1, F) or class ids (N,). `window` (T) must be given, as an option or as
    `spec.extra["window"]`.
    """

    recurrent = False

    options = {"window": None}

    def build(self, spec: ModelSpec, generator=None) -> FeedForward:
        if spec.tie_weights:
            raise ValueError("one-to-one does not tie weights: tie_weights must be False")
        window = self.window or spec.extra.get("window")
        if not window:
            raise ValueError("one-to-one needs the window length: option window=T")
        return FeedForward(spec, int(window), generator)

    def check_data(self, inputs: Any, targets: Any) -> None:
        self.require(
            inputs.ndim in (2, 3),
            f"one-to-one takes windows (N, T, D) or ids (N, T); got shape {inputs.shape}",
        )
        self.require(
            len(targets) == len(inputs)
            and (targets.ndim in (1, 2) or (targets.ndim == 3 and targets.shape[1] == 1)),
            "one-to-one needs one target per window, (N,) class ids or (N, F) values (or "
            f"(N, 1, F)); got targets of shape {targets.shape} for inputs of shape "
            f"{inputs.shape}",
        )

    def loss(self, model: FeedForward, inputs: Any, targets: Any, state: Any = None) -> StepOutput:
        outputs = model(inputs)
        if targets.ndim == 3:
            targets = targets[:, 0]
        return StepOutput(
            model.head.loss(outputs, targets_like(targets, outputs)), None, len(inputs), outputs
        )

    def predict(self, model: FeedForward, inputs: Any, state: Any = None) -> tuple[Any, Any]:
        with inference(model):
            return model.head.predict(model(inputs)), None
