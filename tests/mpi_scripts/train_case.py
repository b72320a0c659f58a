"""One data-parallel training case per call, run by tests/test_distributed.py under mpiexec:

    mpiexec -n 2 python tests/mpi_scripts/train_case.py CASE OUT_DIR [--timeout S]

Cases:
  stateless, stateful  train 2 epochs at the per-rank batch of PER_RANK_BATCH; every rank
                       saves its final parameters to OUT_DIR/rank<r>.npz
  resume               a stateful run with dropout: once straight through, once cut mid-epoch
                       and resumed from its checkpoint; OUT_DIR/{full,resumed}_rank<r>.npz
  die                  rank 1 ends itself with os._exit(1) at its third step
  raise                rank 1 raises RuntimeError at its third step

The builders are imported by the test too, to train the single-process reference.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import tinygrad_rnn as tr
import topologies
from tinygrad_rnn.data import noisy_sine, sliding_windows
from tinygrad_rnn.train import TrainConfig, Trainer

PER_RANK_BATCH = {"stateless": 8, "stateful": 4}
WINDOW = 8
TRAIN_SAMPLES = 192  # a multiple of 2 ranks x 8: no global batch is dropped


def sine_windows():
    series = noisy_sine(TRAIN_SAMPLES + 16 + WINDOW, 25, 0.05, seed=3).astype(np.float64)
    X, Y = sliding_windows(series, WINDOW)
    return (X[:TRAIN_SAMPLES], Y[:TRAIN_SAMPLES]), (X[TRAIN_SAMPLES:], Y[TRAIN_SAMPLES:])


def token_stream(n: int = 2000, vocab: int = 7) -> np.ndarray:
    rng = np.random.default_rng(5)
    ids = np.zeros(n, dtype=np.int64)
    for i in range(1, n):
        ids[i] = (ids[i - 1] + 1) % vocab if rng.random() < 0.9 else rng.integers(vocab)
    return ids


def make_stateless(batch_size: int, communicator=None, out_dir=None, **config) -> Trainer:
    """Many-to-one LSTM on sine windows, float64, Adam, a clip that bites every step."""
    tr.manual_seed(0)
    train, valid = sine_windows()
    topo = topologies.create("many-to-one")
    model = topo.build(topologies.ModelSpec(cell="lstm", hidden_size=8, input_size=1,
                                            dtype="float64"))
    cfg = TrainConfig(**{"epochs": 2, "batch_size": batch_size, "lr": 1e-2, "clip": 0.05,
                         "optimizer": "adam", "quiet": True, **config})
    return Trainer(topo, model, cfg, train, valid, out_dir=out_dir, communicator=communicator)


def make_stateful(batch_size: int, communicator=None, out_dir=None, spec=None, **config):
    """Synced GRU language model on a token stream, float64, momentum SGD, clipped."""
    tr.manual_seed(0)
    ids = token_stream()
    topo = topologies.create("synced")
    spec = spec or {"cell": "gru", "hidden_size": 12, "dtype": "float64"}
    model = topo.build(topologies.ModelSpec(vocab_size=7, embedding_size=6, output_size=7,
                                            head="probabilities", **spec))
    cfg = TrainConfig(**{"epochs": 2, "batch_size": batch_size, "time_size": 10, "lr": 0.1,
                         "optimizer": "momentum", "clip": 0.05, "quiet": True, **config})
    return Trainer(topo, model, cfg, ids[:1600], ids[1600:], out_dir=out_dir,
                   communicator=communicator)


def save_params(path: Path, trainer: Trainer) -> None:
    np.savez(path, **trainer.model.state_dict())


def fail_at_third_step(trainer: Trainer, how: str) -> None:
    original = trainer.topology.loss
    calls = {"n": 0}

    def loss(model, inputs, targets, state=None):
        calls["n"] += 1
        if calls["n"] == 3:
            if how == "die":
                os._exit(1)
            raise RuntimeError("injected failure in the loss")
        return original(model, inputs, targets, state)

    trainer.topology.loss = loss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["stateless", "stateful", "resume", "die", "raise"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args()

    from tinygrad_rnn.train.distributed import MPICommunicator

    comm = MPICommunicator(timeout=args.timeout)
    rank = comm.rank
    if args.case in ("stateless", "stateful"):
        make = make_stateless if args.case == "stateless" else make_stateful
        trainer = make(PER_RANK_BATCH[args.case], comm)
        trainer.fit()
        save_params(args.out / f"rank{rank}.npz", trainer)
    elif args.case == "resume":
        spec = {"cell": "lstm", "hidden_size": 12, "num_layers": 2, "dropout": 0.3}
        B = PER_RANK_BATCH["stateful"]
        full = make_stateful(B, comm, args.out / "full", spec)
        full.fit()
        cut = make_stateful(B, comm, args.out / "cut", spec, max_steps=len(full.loader) + 3)
        cut.fit()
        resumed = make_stateful(B, comm, args.out / "cut", spec)
        resumed.resume(args.out / "cut")
        resumed.fit()
        save_params(args.out / f"full_rank{rank}.npz", full)
        save_params(args.out / f"resumed_rank{rank}.npz", resumed)
    else:
        trainer = make_stateless(PER_RANK_BATCH["stateless"], comm, epochs=50)
        if rank == 1:
            fail_at_third_step(trainer, args.case)
        trainer.fit()
        print(f"rank {rank} finished, which it should not have", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
