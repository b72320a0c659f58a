"""Data-parallel scaling over MPI processes: lm-small and lm-large, P processes against 1.

    python benchmarks/mpi_scaling.py --mpi 2
    python benchmarks/mpi_scaling.py --mpi 2 --models lm-small --json

For each model it runs the real distributed training path (Trainer with an MPICommunicator,
one flat-buffer allreduce a step) under ``mpiexec -n 1`` and under ``mpiexec -n P``, one BLAS
thread per process, the same per-rank batch, and reports

    efficiency = throughput(P processes) / (P x throughput(1 process))

where throughput is training tokens per second over the whole job (all ranks' tokens), timed
after a few warm-up steps. One process is the plain single-process trainer (a communicator of
one rank changes nothing). The data is a random token stream: the work per step does not
depend on the tokens.

It also runs P independent single-process trainers side by side (no communication at all):
their summed throughput over P x the one-process throughput is the `ceiling`, what the machine
itself allows P processes (shared caches, memory bandwidth, cores that are not whole cores).
`efficiency / ceiling` is then the share lost to the allreduce and to waiting.

The three runs of a model take turns, `--repeats` times (3), and the medians are reported, so
a change in the machine's load hits all three alike.

Models (the word-LM recipes' shapes): lm-small is V=10000, E=H=100, 1-layer LSTM; lm-large is
V=10000, 2x650 LSTM, dropout 0.5, tied embedding and head. Both: batch 20 per rank, T=35,
SGD lr 20 with clip 0.25, state carried across batches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # the working tree's library
    sys.path.insert(0, str(ROOT))

MESSAGE = "@@mpi-scaling "  # prefix of rank 0's result line
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

MODELS: dict[str, dict[str, Any]] = {
    "lm-small": {
        "spec": {"cell": "lstm", "hidden_size": 100, "embedding_size": 100, "init": "textbook"},
        "warmup": 3,
        "steps": 30,
    },
    "lm-large": {
        "spec": {"cell": "lstm", "hidden_size": 650, "embedding_size": 650, "num_layers": 2,
                 "dropout": 0.5, "tie_weights": True},
        "warmup": 2,
        "steps": 5,
    },
}
VOCAB = 10_000
BATCH_PER_RANK = 20
TIME_SIZE = 35


# ---- worker: one model, under mpiexec ------------------------------------------------------
def run_worker(model_name: str, warmup: int, steps: int, independent: bool = False) -> None:
    import numpy as np

    import tinygrad_rnn as tr
    import topologies
    from tinygrad_rnn.train import TrainConfig, Trainer
    from tinygrad_rnn.train.distributed import MPICommunicator

    comm = MPICommunicator()
    config = MODELS[model_name]
    tokens_needed = (warmup + steps + 1) * TIME_SIZE * BATCH_PER_RANK * comm.size + 2
    ids = np.random.default_rng(0).integers(VOCAB, size=tokens_needed)
    tr.manual_seed(0)
    topology = topologies.create("synced")
    spec = topologies.ModelSpec(vocab_size=VOCAB, output_size=VOCAB, head="probabilities",
                                **config["spec"])
    model = topology.build(spec)
    train = TrainConfig(epochs=1, batch_size=BATCH_PER_RANK, time_size=TIME_SIZE,
                        optimizer="sgd", lr=20.0, clip=0.25, quiet=True, max_steps=warmup)
    trainer = Trainer(topology, model, train, ids, communicator=None if independent else comm)
    trainer.fit()  # warm-up: buffers allocated, caches warm
    trainer.config.max_steps = warmup + steps
    trainer.fit()  # a fresh pass over the stream, timed by the trainer itself
    record = trainer.history[-1]
    if independent:  # every rank trained alone; the job's throughput is their sum
        rates = comm.gather_object(record["throughput"], "the throughput gather")
        if rates is not None:
            record = {**record, "throughput": sum(rates)}
    if comm.rank == 0:
        parameters = sum(p.data.size for p in model.parameters())
        result = {
            "model": model_name,
            "processes": comm.size,
            "steps": steps,
            "tokens_per_s": record["throughput"],
            "seconds_per_step": record["seconds"] / steps,
            "parameters": int(parameters),
            "allreduce_bytes": None if trainer._allreduce is None else trainer._allreduce.nbytes,
        }
        sys.stdout.write(MESSAGE + json.dumps(result) + "\n")
        sys.stdout.flush()


# ---- parent: launch 1 and P processes per model --------------------------------------------
def _launch(mpiexec: str, processes: int, model_name: str, warmup: int, steps: int,
            timeout: float, independent: bool = False) -> dict[str, Any]:
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1")}
    command = [mpiexec, "-n", str(processes), sys.executable, str(Path(__file__).resolve()),
               "--worker", model_name, "--warmup", str(warmup), "--steps", str(steps)]
    if independent:
        command.append("--independent")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith(MESSAGE):
            return json.loads(line[len(MESSAGE):])
    raise RuntimeError(
        f"{' '.join(command)} exited {done.returncode} without a result:\n"
        f"{(done.stdout + done.stderr)[-2000:]}"
    )


def measure(processes: int, models: list[str], quick: bool = False, repeats: int = 3,
            timeout: float = 900) -> list[dict[str, Any]]:
    """Median throughput on 1 and on `processes` processes, and the efficiency, per model."""
    from tinygrad_rnn.train.distributed import find_mpiexec

    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise RuntimeError("no mpiexec: pip install 'tinygrad-rnn[mpi]' (mpi4py, mpich)")
    rows = []
    for name in models:
        warmup, steps = MODELS[name]["warmup"], MODELS[name]["steps"]
        if quick:
            warmup, steps = 1, 2
        runs: dict[str, list[dict[str, Any]]] = {"one": [], "many": [], "alone": []}
        for _ in range(repeats):
            runs["one"].append(_launch(mpiexec, 1, name, warmup, steps, timeout))
            runs["many"].append(_launch(mpiexec, processes, name, warmup, steps, timeout))
            runs["alone"].append(
                _launch(mpiexec, processes, name, warmup, steps, timeout, independent=True)
            )
        one, many, alone = (_median_run(runs[k]) for k in ("one", "many", "alone"))
        rows.append({
            "model": name,
            "processes": processes,
            "parameters": many["parameters"],
            "allreduce_bytes": many["allreduce_bytes"],
            "tokens_per_s_1": one["tokens_per_s"],
            "tokens_per_s_p": many["tokens_per_s"],
            "seconds_per_step_1": one["seconds_per_step"],
            "seconds_per_step_p": many["seconds_per_step"],
            "efficiency": many["tokens_per_s"] / (processes * one["tokens_per_s"]),
            "ceiling": alone["tokens_per_s"] / (processes * one["tokens_per_s"]),
        })
    return rows


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **runs[0],
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
        "seconds_per_step": statistics.median(r["seconds_per_step"] for r in runs),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'model':9s} {'params':>10s} {'allreduce':>10s} {'1 proc tok/s':>13s} "
        f"{'P procs tok/s':>14s} {'s/step 1':>9s} {'s/step P':>9s} {'efficiency':>10s} "
        f"{'ceiling':>8s}"
    ]
    for r in rows:
        lines.append(
            f"{r['model']:9s} {r['parameters']:>10,d} {r['allreduce_bytes'] / 1e6:>8.1f}MB "
            f"{r['tokens_per_s_1']:>13,.0f} {r['tokens_per_s_p']:>14,.0f} "
            f"{r['seconds_per_step_1']:>9.3f} {r['seconds_per_step_p']:>9.3f} "
            f"{r['efficiency']:>10.1%} {r['ceiling']:>8.1%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpi", type=int, default=2, metavar="P",
                        help="processes to compare against one (default 2)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind (3)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--independent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.warmup, args.steps, args.independent)
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or args.mpi < 2:
        parser.error(f"--models from {sorted(MODELS)} and --mpi >= 2; got {models}, {args.mpi}")
    started = time.perf_counter()
    rows = measure(args.mpi, models, args.quick, max(args.repeats, 1))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"data-parallel scaling, {args.mpi} processes against 1, 1 BLAS thread each, "
              f"batch {BATCH_PER_RANK} per process, T={TIME_SIZE}, median of {args.repeats}")
        print(format_table(rows))
        print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
