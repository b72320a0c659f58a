"""The benchmark cases: one training step each, ours and the PyTorch reference, same work.

A case is a configuration (shapes, optimizer, clipping, threads), a builder per
implementation that returns a zero-argument `step()` doing one full training step,
and the list of the step's matmuls for the roofline. Both builders draw their data
from the same seeded host arrays, so the two implementations see the same shapes,
ids and values; the models start from different random weights, which does not
change the work.

Our side goes through `topologies`, the path the trainer takes:
- lm-small, lm-large: the synced topology's `RecurrentModel` (Embedding -> LSTM ->
  Linear head, dropout on the embedding and on the LSTM output when configured),
  `Synced.loss` (softmax cross-entropy), `tr.nn.clip_grad_norm`, `tr.optim.SGD`;
  the state is carried and detached with `topologies.detach_state`.
- sine: the many-to-one topology (LSTM -> Linear on the last step, MSE), `tr.optim.Adam`.
- seq2seq: the seq2seq topology's `Seq2SeqModel` (encoder Embedding + LSTM, decoder
  Embedding + LSTM started from the encoder's state, Linear head; teacher forcing),
  `tr.nn.clip_grad_norm`, `tr.optim.Adam`.
The reference is plain idiomatic PyTorch doing the same work (see `_torch_*`).

Shape letters: N batch, T time, E embedding, H hidden, V vocabulary, L layers,
G = 4 LSTM gates, M = N * T rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Step = Callable[[], None]

__all__ = ["Case", "MatmulShape", "CASES", "TRAINING_CASES", "case_config", "build_step"]


# ---- the step's matmuls, for the roofline ----------------------------------------------
@dataclass(frozen=True)
class MatmulShape:
    """`count` matmuls (rows, inner) @ (inner, cols) per training step."""

    label: str
    rows: int
    inner: int
    cols: int
    count: int = 1

    @property
    def flops(self) -> int:
        """Multiply-adds counted as 2 FLOPs, all `count` calls."""
        return 2 * self.rows * self.inner * self.cols * self.count


def _dense_matmuls(label: str, rows: int, inputs: int, outputs: int) -> list[MatmulShape]:
    """y = x @ W.T over M rows: forward, input gradient, weight gradient (3x forward)."""
    return [
        MatmulShape(f"{label} fwd", rows, inputs, outputs),
        MatmulShape(f"{label} dx", rows, outputs, inputs),
        MatmulShape(f"{label} dW", outputs, rows, inputs),
    ]


def _lstm_matmuls(label: str, batch: int, time: int, inputs: int, hidden: int
                  ) -> list[MatmulShape]:
    """One LSTM layer: the input projection of all steps at once (a dense layer), the
    per-step hidden projection forward and back, and one batched hidden-weight gradient."""
    gates = 4 * hidden
    return [
        *_dense_matmuls(f"{label} input proj", batch * time, inputs, gates),
        MatmulShape(f"{label} h@W_hh fwd", batch, hidden, gates, time),
        MatmulShape(f"{label} dh", batch, gates, hidden, time),
        MatmulShape(f"{label} dW_hh", gates, batch * time, hidden),
    ]


# ---- the cases ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """A benchmark case: its configuration, unit, threads and step builders."""

    name: str
    description: str
    unit: str  # "tokens/s" or "samples/s"
    threads: int  # for both implementations
    steps: int  # timed steps per repeat
    warmup: int  # untimed steps before the first repeat
    config: dict[str, Any]
    quick_config: dict[str, Any]
    ours_path: str
    torch_path: str
    items: Callable[[dict[str, Any]], int]  # tokens or samples per step
    matmuls: Callable[[dict[str, Any]], list[MatmulShape]]
    build_ours: Callable[[dict[str, Any]], Step]
    build_torch: Callable[[dict[str, Any], str], Step]
    extra: dict[str, Any] = field(default_factory=dict)


def case_config(case: Case, quick: bool) -> dict[str, Any]:
    """The case's configuration: the real one, or the tiny one for --quick."""
    return dict(case.quick_config if quick else case.config)


def build_step(case: Case, impl: str, config: dict[str, Any], device: str = "cpu") -> Step:
    """`step()` for implementation 'ours' or 'torch' (on `device`, 'cpu' or 'cuda')."""
    if impl == "ours":
        return case.build_ours(config)
    if impl == "torch":
        return case.build_torch(config, device)
    raise ValueError(f"impl must be 'ours' or 'torch'; got {impl!r}")


# ---- data: the same host arrays for both sides ---------------------------------------------
BATCHES = 8  # distinct batches cycled through, so no step reuses the previous one's data


def _token_batches(cfg: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive (N, T) windows of one random token stream, and their next-token targets."""
    N, T, V = cfg["batch"], cfg["time"], cfg["vocab"]
    stream = np.random.default_rng(1).integers(0, V, size=(N, BATCHES * T + 1))
    return [
        (stream[:, b * T : (b + 1) * T], stream[:, b * T + 1 : (b + 1) * T + 1])
        for b in range(BATCHES)
    ]


def _sine_batches(cfg: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Noisy sine windows (N, W, 1) and the next value (N, 1), float32."""
    N, W = cfg["batch"], cfg["window"]
    rng = np.random.default_rng(2)
    batches = []
    for _ in range(BATCHES):
        start = rng.uniform(0, 50, size=(N, 1))
        t = start + np.arange(W + 1)[None, :]
        series = np.sin(2 * np.pi * t / 50) + 0.1 * rng.standard_normal(t.shape)
        series = series.astype(np.float32)
        batches.append((series[:, :W, None], series[:, W:]))
    return batches


def _seq2seq_batches(cfg: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Question ids (N, Tq) and answer ids (N, Ta) whose first column is the start token."""
    N, V, Tq, Ta = cfg["batch"], cfg["vocab"], cfg["question"], cfg["answer"]
    rng = np.random.default_rng(3)
    start_token = V - 1
    batches = []
    for _ in range(BATCHES):
        questions = rng.integers(0, V - 1, size=(N, Tq))
        answers = rng.integers(0, V - 1, size=(N, Ta))
        answers[:, 0] = start_token
        batches.append((questions, answers))
    return batches


class _Cycle:
    """Hands out the prepared batches in turn."""

    def __init__(self, batches: list[Any]):
        self.batches, self.index = batches, 0

    def next(self) -> Any:
        batch = self.batches[self.index % len(self.batches)]
        self.index += 1
        return batch


# ---- ours ---------------------------------------------------------------------------------
def _ours_lm(cfg: dict[str, Any]) -> Step:
    import tinygrad_rnn as tr
    import topologies
    from tinygrad_rnn.nn import clip_grad_norm

    tr.manual_seed(0)
    spec = topologies.ModelSpec(
        cell="lstm", hidden_size=cfg["hidden"], output_size=cfg["vocab"], head="probabilities",
        vocab_size=cfg["vocab"], embedding_size=cfg["embedding"], num_layers=cfg["layers"],
        dropout=cfg["dropout"], tie_weights=cfg["tied"],
    )
    topology = topologies.create("many-to-many-synced")
    model = topology.build(spec)
    model.train()
    params = model.parameters()
    optimizer = tr.optim.SGD(params, lr=cfg["lr"])
    data = _Cycle([(tr.tensor(x), tr.tensor(y)) for x, y in _token_batches(cfg)])
    carried: list[Any] = [None]

    def step() -> None:
        inputs, targets = data.next()
        out = topology.loss(model, inputs, targets, carried[0])
        optimizer.zero_grad()
        out.loss.backward()
        clip_grad_norm(params, cfg["clip"])
        optimizer.step()
        carried[0] = topologies.detach_state(out.state)

    step.carried = carried  # the memory check looks at the carried state's tape
    return step


def _ours_sine(cfg: dict[str, Any]) -> Step:
    import tinygrad_rnn as tr
    import topologies

    tr.manual_seed(0)
    spec = topologies.ModelSpec(cell="lstm", hidden_size=cfg["hidden"], output_size=1,
                                head="regression", input_size=1)
    topology = topologies.create("many-to-one")
    model = topology.build(spec)
    model.train()
    optimizer = tr.optim.Adam(model.parameters(), lr=cfg["lr"])
    data = _Cycle([(tr.tensor(x), tr.tensor(y)) for x, y in _sine_batches(cfg)])

    def step() -> None:
        inputs, targets = data.next()
        out = topology.loss(model, inputs, targets)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()

    return step


def _ours_seq2seq(cfg: dict[str, Any]) -> Step:
    import tinygrad_rnn as tr
    import topologies
    from tinygrad_rnn.nn import clip_grad_norm

    tr.manual_seed(0)
    spec = topologies.ModelSpec(cell="lstm", hidden_size=cfg["hidden"], output_size=cfg["vocab"],
                                head="probabilities", vocab_size=cfg["vocab"],
                                embedding_size=cfg["embedding"])
    topology = topologies.create("many-to-many-seq2seq")
    model = topology.build(spec)
    model.train()
    params = model.parameters()
    optimizer = tr.optim.Adam(params, lr=cfg["lr"])
    data = _Cycle([(tr.tensor(q), tr.tensor(a)) for q, a in _seq2seq_batches(cfg)])

    def step() -> None:
        questions, answers = data.next()
        out = topology.loss(model, questions, answers)
        optimizer.zero_grad()
        out.loss.backward()
        clip_grad_norm(params, cfg["clip"])
        optimizer.step()

    return step


# ---- the PyTorch reference ------------------------------------------------------------------
def _torch_lm(cfg: dict[str, Any], device: str) -> Step:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class WordLM(nn.Module):
        """PyTorch's word_language_model example, batch-first."""

        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(cfg["dropout"])
            self.encoder = nn.Embedding(cfg["vocab"], cfg["embedding"])
            self.rnn = nn.LSTM(cfg["embedding"], cfg["hidden"], cfg["layers"],
                               dropout=cfg["dropout"] if cfg["layers"] > 1 else 0.0,
                               batch_first=True)
            self.decoder = nn.Linear(cfg["hidden"], cfg["vocab"])
            if cfg["tied"]:
                self.decoder.weight = self.encoder.weight

        def forward(self, ids: Any, hidden: Any) -> tuple[Any, Any]:
            emb = self.drop(self.encoder(ids))
            out, hidden = self.rnn(emb, hidden)
            return self.decoder(self.drop(out)), hidden

    torch.manual_seed(0)
    model = WordLM().to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    data = _Cycle([(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
                   for x, y in _token_batches(cfg)])
    hidden: list[Any] = [None]

    def step() -> None:
        ids, targets = data.next()
        state = hidden[0]
        if state is not None:
            state = tuple(h.detach() for h in state)
        optimizer.zero_grad()
        logits, hidden[0] = model(ids, state)
        loss = F.cross_entropy(logits.reshape(-1, cfg["vocab"]), targets.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        optimizer.step()

    return step


def _torch_sine(cfg: dict[str, Any], device: str) -> Step:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ManyToOne(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(1, cfg["hidden"], batch_first=True)
            self.head = nn.Linear(cfg["hidden"], 1)

        def forward(self, x: Any) -> Any:
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    torch.manual_seed(0)
    model = ManyToOne().to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    data = _Cycle([(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
                   for x, y in _sine_batches(cfg)])

    def step() -> None:
        x, y = data.next()
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def _torch_seq2seq(cfg: dict[str, Any], device: str) -> Step:
    import torch
    import torch.nn.functional as F
    from torch import nn

    V, E, H = cfg["vocab"], cfg["embedding"], cfg["hidden"]

    class EncoderDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc_embedding = nn.Embedding(V, E)
            self.encoder = nn.LSTM(E, H, batch_first=True)
            self.dec_embedding = nn.Embedding(V, E)
            self.decoder = nn.LSTM(E, H, batch_first=True)
            self.head = nn.Linear(H, V)

        def forward(self, questions: Any, answers_in: Any) -> Any:
            _, state = self.encoder(self.enc_embedding(questions))
            out, _ = self.decoder(self.dec_embedding(answers_in), state)  # teacher forcing
            return self.head(out)

    torch.manual_seed(0)
    model = EncoderDecoder().to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    data = _Cycle([(torch.from_numpy(q).to(device), torch.from_numpy(a).to(device))
                   for q, a in _seq2seq_batches(cfg)])

    def step() -> None:
        questions, answers = data.next()
        optimizer.zero_grad()
        logits = model(questions, answers[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), answers[:, 1:].reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        optimizer.step()

    return step


# ---- shapes and counts ----------------------------------------------------------------------
def _lm_matmuls(cfg: dict[str, Any]) -> list[MatmulShape]:
    N, T, E, H, V = cfg["batch"], cfg["time"], cfg["embedding"], cfg["hidden"], cfg["vocab"]
    shapes = []
    for k in range(cfg["layers"]):
        shapes += _lstm_matmuls(f"lstm{k}", N, T, E if k == 0 else H, H)
    return shapes + _dense_matmuls("decoder", N * T, H, V)


def _sine_matmuls(cfg: dict[str, Any]) -> list[MatmulShape]:
    N, W, H = cfg["batch"], cfg["window"], cfg["hidden"]
    return _lstm_matmuls("lstm", N, W, 1, H) + _dense_matmuls("head", N, H, 1)


def _seq2seq_matmuls(cfg: dict[str, Any]) -> list[MatmulShape]:
    N, E, H, V = cfg["batch"], cfg["embedding"], cfg["hidden"], cfg["vocab"]
    Tq, Td = cfg["question"], cfg["answer"] - 1  # the decoder reads all but the last answer id
    return (_lstm_matmuls("encoder", N, Tq, E, H) + _lstm_matmuls("decoder", N, Td, E, H)
            + _dense_matmuls("head", N * Td, H, V))


_LM_SMALL = {"vocab": 10000, "embedding": 100, "hidden": 100, "layers": 1, "dropout": 0.0,
             "tied": False, "batch": 20, "time": 35, "lr": 20.0, "clip": 0.25}
_LM_LARGE = {**_LM_SMALL, "embedding": 650, "hidden": 650, "layers": 2, "dropout": 0.5,
             "tied": True}
_SINE = {"hidden": 32, "window": 25, "batch": 32, "lr": 3e-3}
_SEQ2SEQ = {"vocab": 13, "embedding": 16, "hidden": 128, "batch": 128, "question": 7,
            "answer": 5, "lr": 1e-3, "clip": 5.0}

_LM_OURS = ("topologies: synced RecurrentModel (Embedding, LSTM, Linear head), Synced.loss "
            "(softmax_cross_entropy), tr.nn.clip_grad_norm, tr.optim.SGD, state detached")
_LM_TORCH = ("nn.Embedding, nn.LSTM(batch_first), nn.Linear, F.cross_entropy, "
             "clip_grad_norm_, optim.SGD, hidden detached")

CASES: dict[str, Case] = {
    "lm-small": Case(
        name="lm-small",
        description="word-LM step: V=10000, E=H=100, 1-layer LSTM, N=20, T=35, SGD lr 20, "
        "clip 0.25, state carried and detached",
        unit="tokens/s", threads=2, steps=12, warmup=3,
        config=_LM_SMALL,
        quick_config={**_LM_SMALL, "vocab": 300, "embedding": 16, "hidden": 16, "batch": 4,
                      "time": 5},
        ours_path=_LM_OURS, torch_path=_LM_TORCH,
        items=lambda c: c["batch"] * c["time"],
        matmuls=_lm_matmuls, build_ours=_ours_lm, build_torch=_torch_lm,
    ),
    "lm-large": Case(
        name="lm-large",
        description="word-LM step: 2x650 LSTM, E=650, dropout 0.5, tied weights, V=10000, N=20, "
        "T=35, SGD lr 20, clip 0.25",
        unit="tokens/s", threads=2, steps=3, warmup=1,
        config=_LM_LARGE,
        quick_config={**_LM_LARGE, "vocab": 300, "embedding": 24, "hidden": 24, "batch": 4,
                      "time": 5},
        ours_path=_LM_OURS + "; dropout on the embedding, between layers and on the output",
        torch_path=_LM_TORCH + "; nn.Dropout on the embedding and output, LSTM dropout",
        items=lambda c: c["batch"] * c["time"],
        matmuls=_lm_matmuls, build_ours=_ours_lm, build_torch=_torch_lm,
    ),
    "sine": Case(
        name="sine",
        description="many-to-one LSTM H=32, window 25, N=32, input 1, MSE, Adam lr 3e-3",
        unit="samples/s", threads=1, steps=300, warmup=30,
        config=_SINE,
        quick_config={**_SINE, "hidden": 8, "window": 5, "batch": 4},
        ours_path="topologies: many-to-one RecurrentModel (LSTM, Linear head on the last step), "
        "ManyToOne.loss (mse_loss), tr.optim.Adam",
        torch_path="nn.LSTM(batch_first), nn.Linear on out[:, -1], F.mse_loss, optim.Adam",
        items=lambda c: c["batch"],
        matmuls=_sine_matmuls, build_ours=_ours_sine, build_torch=_torch_sine,
    ),
    "seq2seq": Case(
        name="seq2seq",
        description="addition seq2seq: V=13, E=16, H=128, N=128, question 7, answer 5 "
        "(incl. start token), Adam lr 1e-3, clip 5.0, teacher forcing",
        unit="samples/s", threads=2, steps=40, warmup=5,
        config=_SEQ2SEQ,
        quick_config={**_SEQ2SEQ, "embedding": 8, "hidden": 16, "batch": 8},
        ours_path="topologies: Seq2SeqModel (enc/dec Embedding + LSTM, Linear head), "
        "Seq2Seq.loss (softmax_cross_entropy), tr.nn.clip_grad_norm, tr.optim.Adam",
        torch_path="nn.Embedding x2, nn.LSTM encoder, nn.LSTM decoder from the encoder state "
        "(teacher forcing), nn.Linear, F.cross_entropy, clip_grad_norm_, optim.Adam",
        items=lambda c: c["batch"],
        matmuls=_seq2seq_matmuls, build_ours=_ours_seq2seq, build_torch=_torch_seq2seq,
    ),
}

TRAINING_CASES = tuple(CASES)
