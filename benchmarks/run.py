"""Benchmarks: our training steps against plain PyTorch, side by side, same shapes and threads.

    python benchmarks/run.py                          # every case, a table
    python benchmarks/run.py --cases lm-small,sine --repeats 7
    python benchmarks/run.py --quick --json --cases sine,memory   # tiny shapes (the smoke test)
    python benchmarks/run.py --backend cupy           # on a GPU, against PyTorch CUDA

Cases (see cases.py): lm-small, lm-large, sine, seq2seq (training steps; ours on the
NumPy backend in float32 against torch 2.13.0 on the CPU), memory (RSS of stateful
lm-small training: after 100 and after 1,000 steps, within 5%) and roofline (each
case's matmuls timed alone, and each step's achieved fraction of that).

Each implementation of each case runs in a process of its own, so its peak RSS is its
own and torch never shares a process with NumPy's OpenBLAS. The two processes of a
case stay alive side by side and take turns: the parent asks one, then the other, for
a repeat (alternating who goes first), so a change in machine load hits both alike.
Threads: 2 for every case but sine (1), set as each library documents it:
`torch.set_num_threads` for torch; `tinygrad_rnn.set_num_threads` for ours, which sizes
its own pool and puts BLAS on one thread per call (the library splits its big matmuls
over the pool itself, and gives a time loop's products BLAS's threads for the loop),
inside threadpoolctl's `threadpool_limits` at the same count for any other pool.

For honest CPU figures, unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in the command
(`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py`) where the
machine sets them; the report says which OpenBLAS kernel ran.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT)):  # the working tree's library, and the sibling modules
    if path not in sys.path:
        sys.path.insert(0, path)

from cases import CASES, TRAINING_CASES, build_step, case_config  # noqa: E402

MESSAGE = "@@bench "  # prefix of the JSON lines a worker sends back on stdout
ALL_CASES = (*TRAINING_CASES, "memory", "roofline")
PAUSE_SECONDS = 0.25  # between turns: lets the other process's BLAS/OpenMP threads go idle
TORCH_VERSION = "2.13.0"
BUSY_CORES = 0.25  # other processes' CPU use above which a figure is flagged


def case_threads(name: str, args: argparse.Namespace) -> int:
    """The case's thread count (2, sine 1), or the --threads override."""
    return args.threads or CASES[name].threads


# ---- worker side: one implementation of one case, in its own process ----------------------
def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(MESSAGE + json.dumps(message) + "\n")
    sys.stdout.flush()


def _device_sync(impl: str, backend: str) -> Any:
    """A function that waits for the device (a no-op on the CPU)."""
    if backend != "cupy":
        return lambda: None
    if impl == "torch":
        import torch

        return torch.cuda.synchronize
    import cupy

    return cupy.cuda.Device().synchronize


def _thread_report(impl: str) -> dict[str, Any]:
    """What threadpoolctl sees (inside the limits), and torch's own thread count."""
    from threadpoolctl import threadpool_info

    report: dict[str, Any] = {"threadpool_info": threadpool_info()}
    if impl == "torch":
        import torch

        report["torch_num_threads"] = torch.get_num_threads()
        report["torch_version"] = torch.__version__
        show = torch.__config__.show()
        report["torch_blas"] = next(
            (part.split("=", 1)[1] for part in show.replace(",", "\n").split()
             if part.startswith("BLAS_INFO=")), "unknown")
    else:
        import numpy

        from tinygrad_rnn.threads import get_num_threads

        report["numpy_version"] = numpy.__version__
        report["ours_num_threads"] = get_num_threads()
    return report


def _use_backend(impl: str, backend: str) -> str:
    """Make our library create tensors on `backend`; the torch device string."""
    if impl == "ours" and backend == "cupy":
        import tinygrad_rnn as tr

        tr.use_backend("cupy")
    if impl == "torch" and backend == "cupy":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch has no CUDA device here (a CPU-only torch build?)")
    return "cuda" if backend == "cupy" else "cpu"


def _pin_threads(impl: str, threads: int) -> None:
    """The implementation's own thread count, as each documents it: torch's intra-op
    pool, or ours (tinygrad_rnn.threads: its pool on `threads` threads, which splits the
    big matmuls itself, with BLAS on one thread per call)."""
    if impl == "torch":
        import torch

        torch.set_num_threads(threads)
    else:
        from tinygrad_rnn.threads import set_num_threads

        set_num_threads(threads)


def _worker_case(args: argparse.Namespace) -> None:
    """Build the step, warm up, then run one timed repeat per 'measure' line on stdin."""
    from memory import peak_rss_mb
    from threadpoolctl import threadpool_limits

    case = CASES[args.worker]
    config = case_config(case, args.quick)
    steps, warmup = (2, 1) if args.quick else (case.steps, case.warmup)
    threads = case_threads(args.worker, args)
    with threadpool_limits(limits=threads):
        _pin_threads(args.impl, threads)
        device = _use_backend(args.impl, args.backend)
        sync = _device_sync(args.impl, args.backend)
        step = build_step(case, args.impl, config, device)
        for _ in range(warmup):
            step()
        sync()
        _send({"ready": True, **_thread_report(args.impl)})
        for line in sys.stdin:
            if line.strip() != "measure":
                break
            sync()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            sync()
            _send({"seconds": time.perf_counter() - start, "steps": steps,
                   "cpu_seconds": time.process_time() - cpu_start,
                   "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults})
    _send({"peak_rss_mb": round(peak_rss_mb(), 1)})


def _worker_memory(args: argparse.Namespace) -> None:
    from memory import stateful_leak_check
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=case_threads("lm-small", args)):
        _pin_threads("ours", case_threads("lm-small", args))
        _use_backend("ours", args.backend)
        _send(stateful_leak_check(args.quick, args.backend))


def _worker_roofline(args: argparse.Namespace) -> None:
    from bench_roofline import measure_rates

    names = args.roofline_cases.split(",")
    threads = {name: case_threads(name, args) for name in names}
    _send({"rates": measure_rates(args.impl, args.backend, names, args.quick, threads),
           **_thread_report(args.impl)})


def profile_case(name: str, args: argparse.Namespace, top: int = 30) -> None:
    """cProfile our step of one case (its threads, its steps per repeat), printed by
    own time and by cumulative time."""
    import cProfile
    import pstats

    from threadpoolctl import threadpool_limits

    case = CASES[name]
    config = case_config(case, args.quick)
    steps = 2 if args.quick else case.steps * 2
    # On one thread, process CPU time is the step's own cost even on a busy machine.
    threads = case_threads(name, args)
    clock = time.process_time if threads == 1 else time.perf_counter
    with threadpool_limits(limits=threads):
        _pin_threads("ours", threads)
        _use_backend("ours", args.backend)
        step = build_step(case, "ours", config)
        for _ in range(1 if args.quick else case.warmup):
            step()
        profiler = cProfile.Profile(clock)
        start = clock()
        profiler.enable()
        for _ in range(steps):
            step()
        profiler.disable()
        seconds = clock() - start
    print(f"{name}: {steps} steps of ours in {seconds:.3f} s ({clock.__name__}) under cProfile "
          f"({seconds / steps * 1e3:.2f} ms/step, {threads} thread(s))")
    for order in ("tottime", "cumulative"):
        pstats.Stats(profiler).strip_dirs().sort_stats(order).print_stats(top)


def worker_main(args: argparse.Namespace) -> int:
    try:
        if args.worker == "memory":
            _worker_memory(args)
        elif args.worker == "roofline":
            _worker_roofline(args)
        else:
            _worker_case(args)
    except Exception as err:  # reported to the parent, which records it as a note
        _send({"error": f"{type(err).__name__}: {err}"})
        raise
    return 0


# ---- parent side -----------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker process failed or exited early."""


class Worker:
    """One worker process: `python run.py --worker NAME --impl IMPL ...`, spoken to by lines."""

    def __init__(self, name: str, impl: str, args: argparse.Namespace,
                 extra: tuple[str, ...] = ()):
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
                   "--impl", impl, "--backend", args.backend, *extra]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.quick:
            command.append("--quick")
        self.label = f"{name}/{impl}"
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, bufsize=1)

    def read(self) -> dict[str, Any]:
        """The next message; WorkerError (with the end of its stderr) if there is none."""
        for line in self.process.stdout:
            if line.startswith(MESSAGE):
                message = json.loads(line[len(MESSAGE):])
                if "error" in message:
                    raise WorkerError(f"{self.label}: {message['error']}")
                return message
        self.process.wait()
        self.stderr.seek(0)
        tail = self.stderr.read()[-1500:].strip()
        raise WorkerError(f"{self.label} exited with code {self.process.returncode}: {tail}")

    def request(self, command: str) -> dict[str, Any]:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the process (all its threads), from /proc."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class ForeignLoad:
    """CPU cores used by other processes while a case measures (ours subtracted)."""

    def __init__(self, workers: list[Worker]):
        self.workers = workers
        self.start = self._snapshot()

    def _snapshot(self) -> tuple[float, float | None, float | None]:
        own = [w.cpu_seconds() for w in self.workers]
        mine = None if None in own else sum(own) + sum(os.times()[:2])
        return time.perf_counter(), _busy_cpu_seconds(), mine

    def cores(self) -> float | None:
        wall0, busy0, mine0 = self.start
        wall1, busy1, mine1 = self._snapshot()
        if None in (busy0, busy1, mine0, mine1) or wall1 <= wall0:
            return None
        return round(max(0.0, (busy1 - busy0) - (mine1 - mine0)) / (wall1 - wall0), 2)


def _stats(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "samples": [round(v, 1) for v in values]}


def _load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def run_training_case(name: str, impls: list[str], args: argparse.Namespace,
                      log: Any) -> dict[str, Any]:
    """Both implementations of one case, measured in turns; stats, RSS, threads."""
    case = CASES[name]
    config = case_config(case, args.quick)
    items = case.items(config)
    result: dict[str, Any] = {
        "description": case.description, "unit": case.unit,
        "threads": case_threads(name, args),
        "items_per_step": items, "steps_per_repeat": 2 if args.quick else case.steps,
        "config": config, "load1_before": _load1(),
    }
    workers = {impl: Worker(name, impl, args) for impl in impls}
    notes: dict[str, str] = {}
    ready: dict[str, dict[str, Any]] = {}
    try:
        for impl, worker in list(workers.items()):
            try:
                ready[impl] = worker.read()
            except WorkerError as err:
                notes[impl] = str(err)
                worker.close()
                del workers[impl]
        throughput: dict[str, list[float]] = {impl: [] for impl in workers}
        cpu_ms: dict[str, list[float]] = {impl: [] for impl in workers}
        faults: dict[str, list[float]] = {impl: [] for impl in workers}
        foreign = ForeignLoad(list(workers.values()))
        order = list(workers)
        pause = 0.0 if args.quick else PAUSE_SECONDS
        for repeat in range(args.repeats):
            for impl in order if repeat % 2 == 0 else order[::-1]:
                time.sleep(pause)
                reply = workers[impl].request("measure")
                throughput[impl].append(items * reply["steps"] / reply["seconds"])
                cpu_ms[impl].append(1e3 * reply["cpu_seconds"] / reply["steps"])
                faults[impl].append(reply["minor_faults"] / reply["steps"])
            log(f"  {name}: repeat {repeat + 1}/{args.repeats} " + ", ".join(
                f"{impl} {values[-1]:,.0f}" for impl, values in throughput.items()))
        result["foreign_cpu_cores"] = foreign.cores()
        finals = {impl: w.request("finish") for impl, w in workers.items()}
    finally:
        for worker in workers.values():
            worker.close()
    result["load1_after"] = _load1()
    for impl in ("ours", "torch"):
        if impl not in throughput:
            result[impl] = None
            continue
        result[impl] = {
            **_stats(throughput[impl]),
            "peak_rss_mb": finals[impl]["peak_rss_mb"],
            # CPU time of the process per step, all threads: on 1 thread it hardly
            # depends on other load, so it cross-checks a figure taken on a busy machine.
            "cpu_ms_per_step": round(statistics.median(cpu_ms[impl]), 3),
            # Fresh pages touched per step (first-touch page faults of new big buffers).
            "minor_faults_per_step": round(statistics.median(faults[impl]), 1),
            "path": case.ours_path if impl == "ours" else case.torch_path,
            "threads_seen": ready[impl],
        }
    if "torch" not in impls:
        notes["torch"] = args.torch_note
    result["notes"] = notes
    if "ours" in notes:
        result["error"] = notes["ours"]
    ours, ref = result["ours"], result["torch"]
    result["ratio"] = round(ours["median"] / ref["median"], 3) if ours and ref else None
    return result


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    worker = Worker("memory", "ours", args)
    try:
        return {"load1_before": _load1(), **worker.read()}
    except WorkerError as err:
        return {"error": str(err)}
    finally:
        worker.close()


def run_roofline(names: list[str], impls: list[str], training: dict[str, Any],
                 args: argparse.Namespace) -> dict[str, Any]:
    """Matmul rates per library, then each case's roofline and achieved fractions."""
    from bench_roofline import summarise

    rates: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for impl in impls:
        worker = Worker("roofline", impl, args, ["--roofline-cases", ",".join(names)])
        try:
            rates[impl] = worker.read()
        except WorkerError as err:
            notes[impl] = str(err)
        finally:
            worker.close()
    out: dict[str, Any] = {"libraries": {
        "ours": "cupy" if args.backend == "cupy" else "numpy",
        "torch": "torch (cuda)" if args.backend == "cupy" else "torch (cpu)"},
        "notes": notes, "cases": {}}
    for name in names:
        steps_per_second: dict[str, float | None] = {}
        cpu_steps_per_second: dict[str, float | None] = {}
        measured = training.get(name) or {}
        for impl in ("ours", "torch"):
            side = measured.get(impl)
            steps_per_second[impl] = side["median"] / measured["items_per_step"] if side else None
            one_thread = measured.get("threads") == 1
            cpu_steps_per_second[impl] = (1e3 / side["cpu_ms_per_step"]
                                          if side and one_thread else None)
        per_lib = {impl: r["rates"][name] for impl, r in rates.items()}
        out["cases"][name] = {"threads": case_threads(name, args),
                              **summarise(name, args.quick, per_lib, steps_per_second,
                                          cpu_steps_per_second)}
    return out


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _library_version() -> dict[str, Any]:
    """The commit the library comes from, and its files changed since (read-only git)."""
    def git(*command: str) -> str:
        try:
            done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True,
                                  check=False, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "tinygrad_rnn", "topologies")
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
            "uncommitted": [line[3:] for line in changed.splitlines()]}


def _torch_status(backend: str) -> tuple[bool, str]:
    """(run the reference?, a note saying why not or which version)."""
    if importlib.util.find_spec("torch") is None:
        return False, f"torch is not installed: skipped (pip install torch=={TORCH_VERSION})"
    from importlib.metadata import version

    found = version("torch")
    if not found.startswith(TORCH_VERSION):
        return True, f"torch {found} found; the reference figures are for {TORCH_VERSION}"
    return True, f"torch {found}"


def _blas_summary(impl: str, threads_seen: dict[str, Any]) -> list[str]:
    """One line per thread pool the worker saw (torch's MKL is linked in, so torch says it)."""
    lines = []
    if impl == "torch":
        lines.append(f"torch {threads_seen.get('torch_version')}: BLAS_INFO="
                     f"{threads_seen.get('torch_blas')}, torch.get_num_threads()="
                     f"{threads_seen.get('torch_num_threads')}")
    else:
        lines.append("tinygrad_rnn.threads.get_num_threads()="
                     f"{threads_seen.get('ours_num_threads')} (its pool: big matmuls split, "
                     "row-parallel passes; BLAS one thread per call outside time loops)")
    for info in threads_seen.get("threadpool_info", []):
        if impl == "torch" and info.get("internal_api") == "openblas":
            continue  # NumPy's, loaded for the host data only
        lines.append(
            f"{info.get('internal_api')} {info.get('version') or ''} ({info.get('user_api')}, "
            f"kernel {info.get('architecture', '-')}, {info.get('threading_layer', '-')}, "
            f"num_threads={info.get('num_threads')}, {Path(info.get('filepath', '')).name})")
    return lines


def _idle_cores(seconds: float) -> float | None:
    """Cores that other processes kept busy over the next `seconds` (ours idle meanwhile)."""
    busy0, mine0, wall0 = _busy_cpu_seconds(), sum(os.times()[:2]), time.perf_counter()
    time.sleep(seconds)
    busy1, mine1, wall1 = _busy_cpu_seconds(), sum(os.times()[:2]), time.perf_counter()
    if busy0 is None or busy1 is None:
        return None
    return round(max(0.0, (busy1 - busy0) - (mine1 - mine0)) / (wall1 - wall0), 2)


def wait_until_idle(max_seconds: float, log: Any, threshold: float = 0.2) -> dict[str, Any]:
    """Wait up to `max_seconds` for other processes to use under `threshold` cores."""
    start = time.perf_counter()
    while True:
        cores = _idle_cores(2.0)
        waited = time.perf_counter() - start
        if cores is None or cores < threshold or waited >= max_seconds:
            return {"other_cpu_cores_before": cores, "waited_s": round(waited, 1)}
        log(f"  machine busy (other processes use {cores} cores); waiting ...")
        time.sleep(5.0)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def render_table(report: dict[str, Any]) -> str:
    meta, results = report["meta"], report["cases"]
    lines = [
        f"tinygrad-rnn benchmarks, {meta['date']}",
        f"command: {meta['command']}",
        f"machine: {meta['cpu_model']}, nproc={meta['nproc']}; python {meta['python']}; "
        f"backend {meta['backend']}, dtype {meta['dtype']}; repeats {meta['repeats']}"
        + (" (QUICK: tiny shapes, not comparable)" if meta["quick"] else ""),
        f"library: commit {meta['library']['commit']}"
        + (f", uncommitted changes in {', '.join(meta['library']['uncommitted'])}"
           if meta["library"]["uncommitted"] else ""),
        f"OPENBLAS_CORETYPE={meta['env']['OPENBLAS_CORETYPE']!s} "
        f"OPENBLAS_L2_SIZE={meta['env']['OPENBLAS_L2_SIZE']!s}; torch: {meta['torch']}",
    ]
    for impl, blas in meta.get("blas", {}).items():
        for line in blas:
            lines.append(f"{impl} BLAS: {line}")
    rows = [("case", "threads", "unit", "ours median [min-max]", "torch median [min-max]",
             "ours/torch", "CPU ms/step ours/torch", "peak RSS MB ours/torch", "load1",
             "other CPU")]
    for name, r in results.items():
        if name not in CASES:
            continue
        if "ours" not in r:  # the case failed before measuring
            lines.append(f"{name}: ERROR {r['error']}")
            continue

        def cell(side: dict[str, Any] | None) -> str:
            if not side:
                return "skipped"
            return f"{_fmt(side['median'])} [{_fmt(side['min'])}-{_fmt(side['max'])}]"

        rss = "/".join(str(r[i]["peak_rss_mb"]) if r[i] else "-" for i in ("ours", "torch"))
        cpu = "/".join(f"{r[i]['cpu_ms_per_step']:.3g}" if r[i] else "-" for i in ("ours", "torch"))
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        other = r.get("foreign_cpu_cores")
        busy = other is not None and other > BUSY_CORES
        rows.append((name, str(r["threads"]), r["unit"], cell(r["ours"]), cell(r["torch"]),
                     ratio, cpu, rss, f"{r['load1_before']}",
                     "-" if other is None else f"{other}" + (" BUSY" if busy else "")))
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        lines.append("(ours/torch: throughput ratio, > 1 means ours is faster; load1: 1-min "
                     "load average before the case; CPU ms/step: process CPU time, all threads, "
                     "the figure least moved by other load on 1 thread; other CPU: cores used "
                     "by other processes "
                     f"while it measured; BUSY: over {BUSY_CORES}, re-measure on an idle "
                     "machine, torch's OpenMP suffers most)")
        for name, r in results.items():
            if name not in CASES:
                continue
            for impl, note in r.get("notes", {}).items():
                lines.append(f"note {name}/{impl}: {note}")
    memory = results.get("memory")
    if memory:
        lines.append("")
        if "error" in memory:
            lines.append(f"memory: ERROR {memory['error']}")
        else:
            first, last = (str(c) for c in memory["checkpoints"])
            lines.append(
                f"memory (lm-small, stateful): RSS {memory['rss_mb'][first]:.1f} MB after {first} "
                f"steps, {memory['rss_mb'][last]:.1f} MB after {last} "
                f"({memory['rss_growth']:+.1%}, limit {memory['tolerance']:.0%}); carried state "
                f"tape entries {memory['carried_state_tape_entries']}: {memory['verdict']}")
    roof = results.get("roofline")
    if roof:
        lines.append("")
        lines.append(f"roofline: matmul GFLOP/s alone ({roof['libraries']['ours']} / torch) at the "
                     "case's threads; achieved = the step's matmul FLOPs / its median step time")
        for note in roof["notes"].values():
            lines.append(f"  note: {note}")
        for name, c in roof["cases"].items():
            parts = [f"  {name} ({c['threads']} thr): {c['gflop_per_step']:.4g} GFLOP/step"]
            for impl in ("ours", "torch"):
                side = c.get(impl)
                if not side:
                    continue
                text = f"{impl}: roofline {side['roofline_gflops']:.1f} GFLOP/s"
                if "achieved_gflops" in side:
                    text += (f", achieved {side['achieved_gflops']:.1f} "
                             f"({side['fraction_of_roofline']:.0%}")
                    if "fraction_of_roofline_by_cpu_time" in side:
                        text += f"; by CPU time {side['fraction_of_roofline_by_cpu_time']:.0%}"
                    text += ")"
                parts.append(text)
            lines.append("; ".join(parts))
            for shape in c["shapes"][:4]:
                rates = "/".join(f"{shape.get(f'{i}_gflops', '-')}" for i in ("ours", "torch"))
                lines.append(f"      {shape['shape']:>16}  {shape['gflop_per_step']:.4g} GFLOP  "
                             f"{rates} GFLOP/s  ({', '.join(shape['uses'])})")
    return "\n".join(lines)


def _parse_cases(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_CASES]
    if not names:
        raise argparse.ArgumentTypeError(
            f"no case given ({text!r}); choose from {', '.join(ALL_CASES)}")
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {unknown}; choose from {', '.join(ALL_CASES)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark our training steps against PyTorch (same shapes, threads, dtype).")
    parser.add_argument("--cases", type=_parse_cases, default=list(ALL_CASES),
                        help=f"comma-separated, from {', '.join(ALL_CASES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per case (5; with --mpi, runs of each kind: 3)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes and 2 steps per repeat: checks that it runs, no figures")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                        help="numpy (CPU, against torch CPU) or cupy (GPU, against torch CUDA)")
    parser.add_argument("--threads", type=int, default=None,
                        help="run every case on this many threads (default: 2, sine 1)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each case, wait up to SECONDS for other processes to leave "
                        "the CPUs idle (default 0: no wait)")
    parser.add_argument("--profile", choices=TRAINING_CASES, metavar="CASE",
                        help="instead of measuring: cProfile our step of CASE and print the "
                        "top costs")
    parser.add_argument("--mpi", type=int, metavar="P",
                        help="instead: data-parallel scaling efficiency of lm-small and lm-large "
                        "on P MPI processes against 1 (benchmarks/mpi_scaling.py)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--roofline-cases", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats_given = args.repeats is not None
    if args.repeats is None:
        args.repeats = 5
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1; got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1; got {args.threads}")
    if args.wait_idle < 0:
        parser.error(f"--wait-idle must be >= 0 seconds; got {args.wait_idle}")
    if args.mpi is not None:
        if args.mpi < 2:
            parser.error(f"--mpi must be >= 2 processes; got {args.mpi}")
        # The scaling run takes --quick, --json and --repeats; anything else would be dropped.
        given = [flag for flag, value, default in (
            ("--cases", args.cases, list(ALL_CASES)), ("--threads", args.threads, None),
            ("--backend", args.backend, "numpy"), ("--profile", args.profile, None),
            ("--wait-idle", args.wait_idle, 0.0)) if value != default]  # fmt: skip
        if given:
            parser.error(f"--mpi runs its own cases (lm-small, lm-large); it takes --quick, "
                         f"--json and --repeats, not {', '.join(given)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mpi is not None:
        from mpi_scaling import main as mpi_main  # a sibling script in benchmarks/

        extra = ["--quick"] if args.quick else []
        extra += ["--json"] if args.json else []
        extra += ["--repeats", str(args.repeats)] if args.repeats_given else []
        return mpi_main(["--mpi", str(args.mpi), *extra])
    if args.worker:
        return worker_main(args)
    if args.backend == "cupy":
        from tinygrad_rnn.backend import get_backend

        reason = get_backend("cupy").unavailable_reason()
        if reason is not None:
            print("run.py: --backend cupy needs CuPy and a CUDA GPU, and this machine has none "
                  f"usable ({' '.join(reason.split())})", file=sys.stderr)
            return 2
    if args.profile:
        profile_case(args.profile, args)
        return 0

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    run_torch, args.torch_note = _torch_status(args.backend)
    impls = ["ours", "torch"] if run_torch else ["ours"]
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    if env["OPENBLAS_CORETYPE"] and args.backend == "numpy":
        log(f"warning: OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} is set and slows NumPy's "
            "OpenBLAS; for figures, run with env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE")
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", *sys.argv]),
        "cpu_model": _cpu_model(), "nproc": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "backend": args.backend, "dtype": "float32",
        "repeats": args.repeats, "quick": args.quick, "env": env, "torch": args.torch_note,
        "load1_start": _load1(), "library": _library_version(),
    }
    results: dict[str, Any] = {}
    training = [n for n in args.cases if n in CASES]
    def idle_check() -> dict[str, Any] | None:
        return wait_until_idle(args.wait_idle, log) if args.wait_idle > 0 else None

    for name in training:
        idle = idle_check()
        log(f"{name}: measuring {' and '.join(impls)} ...")
        try:
            results[name] = run_training_case(name, impls, args, log)
        except WorkerError as err:
            results[name] = {"error": str(err)}
        results[name]["idle_check"] = idle
    blas: dict[str, list[str]] = {}
    for name, r in results.items():
        for impl in ("ours", "torch"):
            if isinstance(r, dict) and r.get(impl) and impl not in blas:
                blas[impl] = [f"{line} [in {name}]"
                              for line in _blas_summary(impl, r[impl]["threads_seen"])]
    meta["blas"] = blas
    if "memory" in args.cases:
        idle = idle_check()
        log("memory: stateful lm-small RSS check ...")
        results["memory"] = {**run_memory(args), "idle_check": idle}
    if "roofline" in args.cases:
        names = training or list(TRAINING_CASES)
        idle = idle_check()
        log(f"roofline: matmul rates for {', '.join(names)} ...")
        results["roofline"] = {**run_roofline(names, impls, results, args), "idle_check": idle}
    meta["load1_end"] = _load1()
    report = {"meta": meta, "cases": results}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(render_table(report))
    failed = [n for n, r in results.items() if isinstance(r, dict) and "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
