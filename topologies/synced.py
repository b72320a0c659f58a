"""many-to-many synced: one output per input step (language models, tagging)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinygrad_rnn.backend import to_host
from tinygrad_rnn.random import default_generator
from tinygrad_rnn.tensor import tensor

from .base import (
    ModelSpec,
    RecurrentModel,
    StepOutput,
    Topology,
    inference,
    refuse_bidirectional,
    scored_targets,
)
from .registry import register


@register("many-to-many-synced", aliases=("synced",))
class Synced(Topology):
    """One output per input step: language models (stateful truncated BPTT) and per-step tagging.

    inputs: token ids (N, T) or values (N, T, D); targets: ids (N, T) or values
    (N, T, F), one per input step. Stateful by default: the trainer feeds a
    StatefulBatcher stream and carries the state, detached, from batch to batch.
    `stateful=False` makes it a per-step tagger on independent windows.
    """

    stateful = True
    carries_state = True
    count_unit = "tokens"

    def build(self, spec: ModelSpec, generator=None) -> RecurrentModel:
        if self.stateful:
            refuse_bidirectional(spec, "in a stateful stream (synced, stateful=True)")
        return RecurrentModel(spec, generator)

    def check_data(self, inputs: Any, targets: Any) -> None:
        self.require(
            inputs.ndim in (2, 3),
            f"synced takes token ids (N, T) or values (N, T, D); got shape {inputs.shape}",
        )
        self.require(
            tuple(targets.shape[:2]) == tuple(inputs.shape[:2]),
            "synced scores every step: targets must share the inputs' (N, T) = "
            f"{tuple(inputs.shape[:2])}; got {tuple(targets.shape)}",
        )

    def loss(
        self, model: RecurrentModel, inputs: Any, targets: Any, state: Any = None
    ) -> StepOutput:
        out, state = model.features(inputs, state)
        # outputs (N, T, V) or (N, T, F); None when a word LM's head and loss run fused
        loss, outputs = model.head.features_loss(out, targets)
        # A stateless tagger's batches are independent windows (the last one may be
        # smaller): its final state is nothing to carry, in training or evaluation.
        carried = state if self.stateful else None
        return StepOutput(loss, carried, scored_targets(model.head, targets), outputs)

    def predict(self, model: RecurrentModel, inputs: Any, state: Any = None) -> tuple[Any, Any]:
        """Per-step values or probabilities (N, T, F or V), and the final state to continue."""
        with inference(model):
            out, state = model.features(inputs, state)
            return model.head.predict(model.head(out)), state

    def generate(
        self,
        model: RecurrentModel,
        prompt: Any,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Continue `prompt` by `length` steps, feeding each output back in.

        Token models sample the next id from softmax(logits / temperature),
        restricted to the `top_k` most likely when given (ids tied with the
        k-th are kept too; temperature 0 is greedy). Regression models continue
        a series in closed loop: the prediction is the next input.
        prompt: ids (T,) or values (T, D), T >= 1.
        Returns the generated steps only, on the host: ids (length,) or values
        (length, F). Runs in eval mode; the model's train/eval modes are restored.
        Draws come from `generator` (default: the library's, see `tr.manual_seed`).
        A bidirectional model is refused: its backward direction cannot continue.
        """
        if length < 0:
            raise ValueError(f"length must be >= 0; got {length}")
        if not (temperature >= 0 and math.isfinite(temperature)):  # nan fails both
            raise ValueError(f"temperature must be a finite number >= 0; got {temperature}")
        if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
            raise ValueError(f"top_k must be None or an int >= 1; got {top_k!r}")
        # Each new step runs the backward direction over that one step only: not the
        # model's output for the longer sequence.
        refuse_bidirectional(model.spec, "to generate")
        rng = generator if generator is not None else default_generator()
        tokens = model.embedding is not None
        prompt = to_host(prompt)
        if prompt.ndim != (1 if tokens else 2) or len(prompt) == 0:
            layout = "ids (T,)" if tokens else "values (T, D)"
            raise ValueError(f"prompt must be {layout} with T >= 1; got shape {prompt.shape}")
        if not tokens:  # values in the model's dtype: an int series would truncate its outputs
            prompt = prompt.astype(model.spec.dtype)
        generated = []
        with inference(model):
            out, state = model.features(tensor(prompt[None]), None)
            last = model.head(out[:, -1:])
            for _ in range(length):
                if tokens:
                    nxt = _sample(last.numpy()[0, -1], temperature, top_k, rng)
                    step = np.asarray([[nxt]], dtype=prompt.dtype)
                else:
                    nxt = last.numpy()[0, -1].astype(prompt.dtype)
                    step = nxt[None, None]
                generated.append(nxt)
                out, state = model.features(tensor(step), state)
                last = model.head(out)
        if tokens:
            return np.asarray(generated, dtype=prompt.dtype)
        return np.asarray(generated).reshape(length, model.spec.output_size)


def _sample(logits: np.ndarray, temperature: float, top_k: int | None, rng) -> int:
    """Draw one id from softmax(logits / temperature) over the top_k ids."""
    logits = logits.astype(np.float64)
    if temperature == 0:
        return int(np.argmax(logits))
    if top_k is not None and 0 < top_k < logits.size:
        cutoff = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits >= cutoff, logits, -np.inf)
    # Shifted before the division: the best logit becomes 0 and the rest stay <= 0, so a
    # tiny temperature sends them to -inf (greedy) instead of overflowing to inf - inf.
    with np.errstate(over="ignore"):  # that overflow is meant: exp(-inf) = 0
        z = (logits - logits.max()) / temperature
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(logits.size, p=p))
