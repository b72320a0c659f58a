"""The topology contract, and the model parts every topology shares.

A topology says how a recurrent network is wired in time. A subclass of
`Topology` defines, in about a page:

- `build(spec)`: the model, from a cell type, the sizes and a head;
- `check_data(inputs, targets)`: which data it accepts (a clear error otherwise);
- `loss(model, inputs, targets, state)`: which steps feed the network and which
  steps the loss scores; returns the loss, the state to carry and the count of
  scored items;
- `predict(model, inputs, state)` (and optionally `generate`): inference, in
  eval mode without a tape (`inference(model)`), the model's modes restored;
- `stateful`: the hidden-state policy. Stateless topologies start every batch
  from a zero state; stateful ones get back the state they returned, detached
  from the graph, so backward is truncated at the batch boundary.

Heads come in the two kinds the field uses: `regression` (identity + MSE) and
`probabilities` (softmax + cross-entropy).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, ClassVar, NamedTuple

import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.backend import get_backend
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.tensor import Tensor, no_grad

__all__ = [
    "Topology",
    "TopologyDataError",
    "ModelSpec",
    "StepOutput",
    "Head",
    "RecurrentModel",
    "make_recurrent",
    "apply_init",
    "detach_state",
    "targets_like",
    "as_values",
    "inference",
    "CELLS",
    "HEADS",
    "INITS",
]

CELLS = ("rnn", "rnn_relu", "lstm", "gru")  # rnn_relu: the Elman RNN with relu
HEADS = ("regression", "probabilities")
INITS = ("pytorch", "textbook")


class TopologyDataError(ValueError):
    """The data does not suit the topology (wrong kind, shape or dtype)."""


@dataclass
class ModelSpec:
    """What a topology needs to build a model. JSON-able (stored in checkpoints).

    `cell` is one of `CELLS`: "rnn" (the Elman RNN with tanh), "rnn_relu" (with
    relu), "lstm" or "gru". Inputs are either real-valued features (`input_size` per step) or token
    ids (`vocab_size`, embedded to `embedding_size`). `output_size` is the
    number of values (regression) or classes (probabilities) per scored step.

    `init` names the weight init ("pytorch": the layers' defaults; "textbook":
    randn/sqrt(fan_in), embeddings randn/100, zero biases). Two settings adjust
    either: `embedding_std`, the embeddings' initial N(0, std), and `forget_bias`,
    every LSTM forget gate's initial bias (1 is the common choice).
    """

    cell: str = "lstm"
    hidden_size: int = 64
    output_size: int = 1
    head: str = "regression"
    input_size: int | None = None
    vocab_size: int | None = None
    embedding_size: int = 16
    num_layers: int = 1
    bidirectional: bool = False  # refused for stateful streams: backward cannot continue one
    dropout: float = 0.0
    tie_weights: bool = False
    init: str = "pytorch"  # or "textbook": randn/sqrt(fan_in), embedding randn/100, zero bias
    # The embedding's initial N(0, std); None: the init's own (textbook 0.01, pytorch 1.0).
    embedding_std: float | None = None
    # LSTM only: the forget gate's initial bias; None: the init's own (0 textbook, U pytorch).
    forget_bias: float | None = None
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}; got {self.cell!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {self.head!r}")
        if (self.input_size is None) == (self.vocab_size is None):
            raise ValueError(
                "give exactly one of input_size (real-valued inputs) and vocab_size "
                f"(token ids); got input_size={self.input_size}, vocab_size={self.vocab_size}"
            )
        for name in ("hidden_size", "output_size", "num_layers", "embedding_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}; got {self.init!r}")
        if self.embedding_std is not None and not self.embedding_std > 0:
            raise ValueError(f"embedding_std must be > 0 (or None); got {self.embedding_std!r}")
        if self.forget_bias is not None:
            if isinstance(self.forget_bias, bool) or not isinstance(
                self.forget_bias, (int, float, np.integer, np.floating)
            ):
                raise ValueError(f"forget_bias must be a finite number; got {self.forget_bias!r}")
            self.forget_bias = float(self.forget_bias)  # NumPy numbers too, as init takes them
            if self.cell != "lstm":
                raise ValueError(
                    f"forget_bias needs cell='lstm' (only an LSTM has a forget gate); "
                    f"got cell={self.cell!r}, forget_bias={self.forget_bias!r}"
                )
            if not math.isfinite(self.forget_bias):
                raise ValueError(f"forget_bias must be a finite number; got {self.forget_bias!r}")

    @property
    def step_input_size(self) -> int:
        """Features the recurrent layer sees per step (after any embedding)."""
        return self.embedding_size if self.vocab_size is not None else int(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StepOutput(NamedTuple):
    """What `Topology.loss` returns."""

    loss: Tensor  # scalar, averaged over the scored items
    state: Any  # the state to carry (stateful) or None
    count: int  # scored items (tokens, samples): for weighted averages and throughput
    # Head outputs of the scored steps, for metrics; None where the loss never built them
    # (a word LM training in float32: its head and loss run as one fused op).
    outputs: Tensor | None = None


def make_recurrent(spec: ModelSpec, input_size: int | None = None, generator=None) -> nn.Module:
    """The stacked recurrent layer that `spec.cell` names: `nn.RNN` (tanh or relu), `nn.LSTM`
    or `nn.GRU`."""
    layers = {
        "rnn": nn.RNN,
        "rnn_relu": partial(nn.RNN, nonlinearity="relu"),
        "lstm": nn.LSTM,
        "gru": nn.GRU,
    }
    return layers[spec.cell](
        spec.step_input_size if input_size is None else input_size,
        spec.hidden_size,
        num_layers=spec.num_layers,
        dropout=spec.dropout if spec.num_layers > 1 else 0.0,
        bidirectional=spec.bidirectional,
        dtype=spec.dtype,
        generator=generator,
    )


def apply_init(module: nn.Module, spec: ModelSpec, generator=None) -> None:
    """Give `module`'s parameters the init `spec.init` names, in place.

    "pytorch": the layers' own defaults, left as built. "textbook": embeddings
    randn/100, weights randn/sqrt(fan_in), zero biases. `spec.embedding_std`, when
    set, replaces either init's embedding scale (drawn N(0, std)). A model calls
    this at the end of its constructor, and again on any layer a subclass adds
    afterwards.
    """
    if spec.init == "textbook":
        std = nn.init.TEXTBOOK_EMBEDDING_STD if spec.embedding_std is None else spec.embedding_std
        nn.init.textbook_init_(module, generator, embedding_std=std)
    elif spec.embedding_std is not None:
        for submodule in module.modules():
            if isinstance(submodule, nn.Embedding):
                nn.init.normal_(submodule.weight, spec.embedding_std, generator)
    if spec.forget_bias is not None:
        nn.init.forget_bias_(module, spec.forget_bias)


def refuse_bidirectional(spec: ModelSpec, why: str) -> None:
    """Raise where a state is carried forward in time: a backward direction cannot continue it."""
    if spec.bidirectional:
        raise ValueError(
            f"bidirectional=True cannot be used {why}: the backward direction reads the "
            "sequence from its end, so it cannot continue a carried state"
        )


def detach_state(state: Any) -> Any:
    """Cut a carried state from the graph: values kept, history dropped."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


class Head(nn.Module):
    """Linear read-out plus the loss of its kind.

    regression: identity + mean squared error, outputs are values.
    probabilities: softmax + cross-entropy, outputs are logits (softmax at predict time).
    """

    def __init__(self, in_features: int, spec: ModelSpec, generator=None):
        super().__init__()
        self.kind = spec.head
        self.linear = nn.Linear(
            in_features, spec.output_size, dtype=spec.dtype, generator=generator
        )

    def forward(self, h: Tensor) -> Tensor:
        """(..., in_features) features -> (..., output_size) values or logits."""
        return self.linear(h)

    def loss(self, outputs: Tensor, targets: Any) -> Tensor:
        """Scalar mean loss: MSE against values of the outputs' shape, or softmax
        cross-entropy against integer class ids of the outputs' shape minus the last axis."""
        if self.kind == "regression":
            return F.mse_loss(outputs, targets)
        return F.softmax_cross_entropy(outputs, targets)

    def features_loss(self, h: Tensor, targets: Any) -> tuple[Tensor, Tensor | None]:
        """(loss, outputs) straight from features: `loss(self(h), targets)`, except that a
        probabilities head whose loss will be backwarded in float32 on NumPy runs as one
        fused op (`F.linear_cross_entropy`: a word LM's (N*T, V) logits are never built),
        and then outputs is None."""
        lin = self.linear
        if self.kind == "probabilities" and F.fuses_linear_cross_entropy(h, lin.weight, lin.bias):
            ids = targets_like(targets, h)
            return F.linear_cross_entropy(h, lin.weight, lin.bias, ids), None
        outputs = self(h)
        return self.loss(outputs, targets_like(targets, outputs)), outputs

    def predict(self, outputs: Tensor) -> Any:
        """Values (regression) or class probabilities (probabilities), raw arrays."""
        return outputs.data if self.kind == "regression" else outputs.softmax(axis=-1).data


class RecurrentModel(nn.Module):
    """Inputs -> (embedding) -> stacked RNN/LSTM/GRU -> dropout -> head.

    inputs: token ids (N, T) when `spec.vocab_size` is set, else values (N, T, D).
    `features` returns the recurrent outputs (N, T, H) and the final state; the
    topology decides which steps go through `head` and into the loss.
    `extra_input_size` widens the recurrent input for topologies that append
    a conditioning vector to every step (one-to-many, peeky decoders).
    """

    def __init__(self, spec: ModelSpec, generator=None, extra_input_size: int = 0):
        super().__init__()
        self.spec = spec
        self.embedding = None
        if spec.vocab_size is not None:
            self.embedding = nn.Embedding(
                spec.vocab_size, spec.embedding_size, dtype=spec.dtype, generator=generator
            )
        self.rnn = make_recurrent(spec, spec.step_input_size + extra_input_size, generator)
        self.dropout = nn.Dropout(spec.dropout, generator=generator) if spec.dropout else None
        directions = 2 if spec.bidirectional else 1
        self.head = Head(spec.hidden_size * directions, spec, generator)
        apply_init(self, spec, generator)
        if spec.tie_weights:
            if self.embedding is None or spec.embedding_size != spec.hidden_size * directions:
                raise ValueError(
                    "tie_weights needs token inputs and embedding_size == hidden_size x "
                    f"directions = {spec.hidden_size * directions}; got vocab_size="
                    f"{spec.vocab_size}, embedding_size={spec.embedding_size}, hidden_size="
                    f"{spec.hidden_size}, bidirectional={spec.bidirectional}"
                )
            if spec.output_size != spec.vocab_size:
                raise ValueError(
                    f"tie_weights needs output_size == vocab_size; got {spec.output_size} "
                    f"and {spec.vocab_size}"
                )
            self.head.linear.weight = self.embedding.weight  # tied by identity

    def embed(self, inputs: Any) -> Tensor:
        """(N, T) ids -> (N, T, E), or (N, T, D) values as a Tensor; dropout applied."""
        if self.embedding is not None:
            x = self.embedding(inputs)
        else:
            x = as_values(inputs, self.spec.dtype)
        return self.dropout(x) if self.dropout is not None else x

    def features(self, inputs: Any, state: Any = None, lengths: Any = None) -> tuple[Tensor, Any]:
        """Recurrent outputs (N, T, H) (dropout applied) and the final state."""
        out, state = self.rnn(self.embed(inputs), state, lengths=lengths)
        return (self.dropout(out) if self.dropout is not None else out), state


def as_values(value: Any, dtype: Any) -> Tensor:
    """Real-valued inputs as a Tensor of the model's `dtype`.

    A Tensor keeps its graph (a differentiable cast when its dtype differs), so
    gradients can flow back to inputs; host or device arrays become constants on
    the default backend. Float64 data meets a float32 model, and the reverse,
    without an error from the first layer.
    """
    if isinstance(value, Tensor):
        return value if value.dtype == np.dtype(dtype) else value.astype(dtype)
    return Tensor(get_backend().asarray(value, dtype=dtype))


@contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no tape for the block; every module's mode is restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with no_grad():
            yield
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)  # as Module.train does, one module at a time


# A class target of -1 is padding: the loss neither scores nor counts it (the default
# ignore_index of F.softmax_cross_entropy, as PyTorch's cross_entropy).
IGNORE_INDEX = -1


def scored_targets(head: Any, targets: Any) -> int:
    """How many of `targets` a head's loss scores: every one for regression; for classes,
    those that are not IGNORE_INDEX. Batches are weighted by it in the trainer's means."""
    data = targets.data if isinstance(targets, Tensor) else targets
    if getattr(head, "kind", None) != "probabilities":
        return int(np.prod(np.shape(data)[:2]))
    return int((data != IGNORE_INDEX).sum())


def targets_like(targets: Any, outputs: Tensor) -> Tensor:
    """Targets as a constant Tensor on the outputs' backend.

    Real-valued targets take the outputs' dtype; integer class ids stay integers.
    """
    data = targets.data if isinstance(targets, Tensor) else targets
    kind = data.dtype.kind if hasattr(data, "dtype") else np.asarray(data).dtype.kind
    dtype = outputs.dtype if kind == "f" else None
    return Tensor(get_backend(outputs.backend).asarray(data, dtype=dtype))


class Topology:
    """Base class of every topology, built-in or plugin. See the module docstring."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    #: True: the trainer reads a StatefulBatcher stream and carries the state.
    stateful: bool = False
    #: True for a topology whose loss returns a state to carry (synced): only such a
    #: topology, or one stateful by default, may be made stateful by the option.
    carries_state: ClassVar[bool] = False
    #: What StepOutput.count counts, for throughput figures ("samples", "tokens", ...).
    count_unit: ClassVar[str] = "samples"
    #: False for a topology without a recurrent layer (one-to-one's feed-forward
    #: baseline): the cell settings (`cell`, `forget_bias`) then mean nothing.
    recurrent: ClassVar[bool] = True
    #: Options a user may set (``--peeky``, ...), with their defaults.
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.options) - {"stateful"})
        if unknown:
            raise ValueError(
                f"topology {self.name!r} has no option(s) {unknown}; it takes "
                f"{sorted(self.options) or 'none'}"
            )
        # A topology that carries state says so (carries_state, or stateful by default, as
        # a plugin's may be); one that does not cannot be made stateful by an option.
        if options.get("stateful") and not (self.carries_state or type(self).stateful):
            raise ValueError(
                f"topology {self.name!r} carries no state from batch to batch, so it cannot "
                "be stateful (a stream of one long sequence is for many-to-many-synced)"
            )
        self.config = {**self.options, **options}
        if "stateful" in options:
            self.stateful = bool(options["stateful"])
        for key, value in self.config.items():
            if key != "stateful":
                setattr(self, key, value)

    @classmethod
    def summary(cls) -> str:
        """The one-line description shown by `topologies.available()`."""
        doc = (cls.__doc__ or "").strip().splitlines()
        return cls.description or (doc[0] if doc else cls.__name__)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({opts})"

    # ---- the contract ------------------------------------------------------------
    def build(self, spec: ModelSpec, generator: np.random.Generator | None = None) -> nn.Module:
        """The model for `spec`; `generator` (default: the library's) draws its initial weights.

        The returned Module must expose `head` (a `Head`), which the trainer reads
        to choose its metrics.
        """
        raise NotImplementedError

    def check_data(self, inputs: Any, targets: Any) -> None:
        """Raise TopologyDataError when the arrays do not suit this topology."""

    def loss(self, model: nn.Module, inputs: Any, targets: Any, state: Any = None) -> StepOutput:
        """Forward one batch and score the steps this topology scores.

        inputs and targets are one batch as the trainer reads it (host or device
        arrays; shapes in the subclass docstring). `state` is the carried state
        (stateful topologies; None at an epoch start) and the returned
        StepOutput.state is what to carry next; stateless topologies take and
        return None. The loss is a scalar Tensor still on the tape.
        """
        raise NotImplementedError

    def predict(self, model: nn.Module, inputs: Any, state: Any = None) -> tuple[Any, Any]:
        """Inference without a tape, in eval mode: (predictions, state).

        Predictions are values (regression) or class probabilities, as raw arrays.
        """
        raise NotImplementedError

    def batch_metrics(
        self, model: nn.Module, inputs: Any, targets: Any, out: StepOutput
    ) -> dict[str, tuple[Any, int]]:
        """Metric sums over one evaluated batch, as name -> (sum, count).

        The trainer adds them up over the data and divides. Default: the
        accuracy of the argmax, for a probabilities head whose outputs line up
        with the targets.
        """
        head = getattr(model, "head", None)
        if getattr(head, "kind", None) != "probabilities" or out.outputs is None:
            return {}
        predicted = out.outputs.data.argmax(axis=-1)
        expected = targets_like(targets, out.outputs).data
        if predicted.shape != expected.shape:
            return {}
        scored = expected != IGNORE_INDEX  # padding is no miss
        return {"accuracy": (((predicted == expected) & scored).sum(), int(scored.sum()))}

    # ---- helpers for subclasses ----------------------------------------------------
    @staticmethod
    def require(condition: bool, message: str) -> None:
        """Raise TopologyDataError(message) unless `condition` holds."""
        if not condition:
            raise TopologyDataError(message)
