"""one-to-many: one input vector unrolls into a whole sequence."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.backend import get_backend, to_host
from tinygrad_rnn.ops import concatenate
from tinygrad_rnn.tensor import Tensor

from .base import (
    ModelSpec,
    RecurrentModel,
    StepOutput,
    Topology,
    apply_init,
    as_values,
    inference,
    refuse_bidirectional,
    targets_like,
)
from .registry import register


class ConditionedModel(RecurrentModel):
    """A RecurrentModel whose state starts from, and whose every step sees, a vector.

    condition (N, P) -> tanh(Linear) is the initial h of every layer (c starts
    at zero for LSTM); each step's input is [previous output, condition].
    """

    def __init__(self, spec: ModelSpec, condition_size: int, generator=None):
        super().__init__(spec, generator, extra_input_size=condition_size)
        self.condition_size = condition_size
        self.init_state = nn.Linear(
            condition_size, spec.hidden_size, dtype=spec.dtype, generator=generator
        )
        apply_init(self.init_state, spec, generator)  # RecurrentModel's ran before it existed

    def initial_state(self, condition: Tensor) -> Any:
        h0 = self.init_state(condition).tanh()  # (N, H)
        h = concatenate([h0.reshape(1, *h0.shape)] * self.spec.num_layers, axis=0)
        if self.spec.cell == "lstm":
            return h, Tensor(get_backend(h.backend).xp.zeros(h.shape, dtype=h.dtype))
        return h

    def run(self, condition: Tensor, previous: Any, state: Any) -> tuple[Tensor, Any]:
        """Head outputs for the steps whose previous outputs are `previous`."""
        x = self.embed(previous)  # (N, T, E or F)
        N, T = x.shape[:2]
        cond = concatenate([condition.reshape(N, 1, -1)] * T, axis=1)
        out, state = self.rnn(concatenate([x, cond], axis=2), state)
        if self.dropout is not None:
            out = self.dropout(out)
        return self.head(out), state


@register("one-to-many")
class OneToMany(Topology):
    """One input vector sets the initial state and conditions every step; generates a sequence.

    inputs: condition vectors (N, P). targets: values (N, T, F) (regression)
    or ids (N, T) (probabilities). Training uses teacher forcing: step t sees
    the true output of step t-1 (zeros, or id `start_id`, at t = 0).
    Inference generates autoregressively, feeding each prediction back.
    `spec.extra["condition_size"]` is P.
    """

    options = {"start_id": 0}
    count_unit = "steps"

    def build(self, spec: ModelSpec, generator=None) -> ConditionedModel:
        refuse_bidirectional(spec, "in one-to-many (generation runs forward in time)")
        size = spec.extra.get("condition_size")
        if not size:
            raise ValueError('one-to-many needs spec.extra["condition_size"] (P)')
        # Each step reads the previous step's output, so outputs and inputs must agree.
        if spec.vocab_size is not None and spec.output_size != spec.vocab_size:
            raise ValueError(
                "one-to-many feeds each predicted id back in: output_size must equal "
                f"vocab_size; got output_size={spec.output_size}, vocab_size={spec.vocab_size}"
            )
        if spec.input_size is not None and spec.output_size != spec.input_size:
            raise ValueError(
                "one-to-many feeds each predicted value back in: output_size must equal "
                f"input_size; got output_size={spec.output_size}, input_size={spec.input_size}"
            )
        return ConditionedModel(spec, int(size), generator)

    def check_data(self, inputs: Any, targets: Any) -> None:
        self.require(
            inputs.ndim == 2 and np.asarray(inputs[:1]).dtype.kind == "f",
            f"one-to-many takes one condition vector per sample, (N, P) floats; got "
            f"shape {inputs.shape}",
        )
        self.require(
            len(targets) == len(inputs) and targets.ndim in (2, 3),
            f"one-to-many needs a target sequence per sample, (N, T, F) or (N, T); got "
            f"{targets.shape} for {len(inputs)} inputs",
        )
        self.require(
            targets.ndim == 3 or np.asarray(targets[:1]).dtype.kind in "iu",
            "one-to-many's (N, T) targets are token ids (integers); a real-valued sequence "
            f"is (N, T, F); got {targets.shape} of {np.asarray(targets[:1]).dtype}",
        )

    def _shift_right(self, targets: np.ndarray) -> np.ndarray:
        first = np.full_like(targets[:, :1], self.start_id if targets.ndim == 2 else 0)
        return np.concatenate([first, targets[:, :-1]], axis=1)

    def loss(
        self, model: ConditionedModel, inputs: Any, targets: Any, state: Any = None
    ) -> StepOutput:
        condition = as_values(inputs, model.spec.dtype)
        host_targets = to_host(targets)
        outputs, _ = model.run(
            condition, self._shift_right(host_targets), model.initial_state(condition)
        )
        loss = model.head.loss(outputs, targets_like(host_targets, outputs))
        return StepOutput(loss, None, int(np.prod(host_targets.shape[:2])), outputs)

    def generate(self, model: ConditionedModel, inputs: Any, length: int) -> np.ndarray:
        """Greedy autoregressive sequences (N, length, F) values or (N, length) ids."""
        if length < 0:
            raise ValueError(f"one-to-many: length must be >= 0; got {length}")
        condition = as_values(inputs, model.spec.dtype)
        N = condition.shape[0]
        tokens = model.embedding is not None
        previous = (
            np.full((N, 1), self.start_id, dtype=np.int64)
            if tokens
            else np.zeros((N, 1, model.spec.output_size), dtype=condition.dtype)
        )
        steps = [previous[:, :0]]  # keeps the shape of an empty sequence right
        with inference(model):
            state = model.initial_state(condition)
            for _ in range(length):
                outputs, state = model.run(condition, previous, state)
                last = outputs.numpy()[:, -1]
                previous = last.argmax(-1)[:, None] if tokens else last[:, None, :]
                steps.append(previous)
        return np.concatenate(steps, axis=1)

    def predict(
        self, model: ConditionedModel, inputs: Any, state: Any = None, length: int | None = None
    ) -> tuple[Any, Any]:
        if length is None:
            raise ValueError("one-to-many predict needs length= (steps to generate)")
        return self.generate(model, inputs, length), None
