"""many-to-one: read a whole sequence, score only its last step."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from tinygrad_rnn.tensor import Tensor, no_grad

from .base import (
    ModelSpec,
    RecurrentModel,
    StepOutput,
    Topology,
    detach_state,
    inference,
    refuse_bidirectional,
    targets_like,
)
from .registry import register


@register("many-to-one", aliases=("m2o",))
class ManyToOne(Topology):
    """Reads a sequence and scores the last step: next-value regression, sequence classification.

    inputs: values (N, T, D) or token ids (N, T). targets: regression values
    (N, F) (a (N, 1, F) window target is accepted), or class ids (N,).

    Option `time_size`: backpropagate through the last `time_size` steps only.
    The steps before them move the state forward without a graph (one pass, no
    memory kept for backward), and the state enters the last steps cut from it:
    predicting step 1001 from 1000 with BPTT over the last 30.
    """

    options = {"time_size": None}

    def __init__(self, **options: Any):
        super().__init__(**options)
        size = self.time_size
        valid = size is None or (isinstance(size, Integral) and not isinstance(size, bool))
        if not valid or (size is not None and size < 1):
            raise ValueError(f"many-to-one: time_size must be None or an int >= 1; got {size!r}")
        self.time_size = None if size is None else int(size)

    def build(self, spec: ModelSpec, generator=None) -> RecurrentModel:
        if self.time_size:
            refuse_bidirectional(spec, "with time_size (the state is carried across chunks)")
        return RecurrentModel(spec, generator)

    def check_data(self, inputs: Any, targets: Any) -> None:
        self.require(
            inputs.ndim in (2, 3),
            f"many-to-one takes inputs (N, T, D) or token ids (N, T); got shape {inputs.shape}",
        )
        self.require(
            len(targets) == len(inputs),
            f"many-to-one needs one target per sequence: {len(inputs)} inputs, "
            f"{len(targets)} targets",
        )
        self.require(
            targets.ndim in (1, 2) or (targets.ndim == 3 and targets.shape[1] == 1),
            "many-to-one scores one step: targets (N,) class ids or (N, F) values "
            f"(or (N, 1, F)); got shape {targets.shape}",
        )

    def last_step(self, model: RecurrentModel, inputs: Any, state: Any = None) -> Tensor:
        """Head outputs of the last step, (N, F) or (N, C)."""
        T = inputs.shape[1]
        graded = self.time_size or T
        if graded < T:
            # The earlier steps only move the state forward: no graph is kept for them.
            with no_grad():
                _, state = model.features(inputs[:, : T - graded], state)
            state = detach_state(state)
            inputs = inputs[:, T - graded :]
        out, _ = model.features(inputs, state)
        return model.head(out[:, -1])

    def loss(
        self, model: RecurrentModel, inputs: Any, targets: Any, state: Any = None
    ) -> StepOutput:
        outputs = self.last_step(model, inputs, state)
        if targets.ndim == 3:
            targets = targets[:, 0]
        loss = model.head.loss(outputs, targets_like(targets, outputs))
        return StepOutput(loss, None, len(inputs), outputs)

    def predict(self, model: RecurrentModel, inputs: Any, state: Any = None) -> tuple[Any, Any]:
        with inference(model):
            return model.head.predict(self.last_step(model, inputs, state)), None
