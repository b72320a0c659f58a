"""Roofline: how fast each case's matmuls run alone, and how close a whole step gets.

For every case, `cases.Case.matmuls` lists the step's matmuls (forward, input
gradient, weight gradient; the recurrent ones per time step). Each distinct shape
is timed alone, with NumPy (or CuPy) and with torch, at the case's thread count.
The step's matmul-bound time is then sum(FLOPs_i / rate_i); its matmul FLOPs over
that time is the case's roofline, in GFLOP/s. A measured step rate gives the
achieved GFLOP/s (the same FLOPs over the real step time) and its fraction of the
roofline: 1.0 would mean everything but the matmuls is free.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cases import CASES, MatmulShape, case_config

__all__ = ["measure_rates", "summarise"]

Key = tuple[int, int, int]


def _sig(value: float) -> float:
    """Rounded to 4 significant digits, so the tiny --quick shapes do not round to 0."""
    return float(f"{value:.4g}")


def _key(shape: MatmulShape) -> Key:
    return (shape.rows, shape.inner, shape.cols)


def _seconds_per_call(call: Callable[[], Any], sync: Callable[[], None],
                      min_seconds: float, clock: Callable[[], float]) -> float:
    """Best of 7 blocks of back-to-back calls, each about `min_seconds` long (the best
    block is the one least disturbed by anything else running)."""
    call()
    sync()
    start = clock()
    call()
    sync()
    once = max(clock() - start, 1e-7)
    reps = max(1, int(min_seconds / once))
    best = float("inf")
    for _ in range(7):
        start = clock()
        for _ in range(reps):
            call()
        sync()
        best = min(best, (clock() - start) / reps)
    return best


def _matmul_maker(impl: str, backend: str) -> tuple[Callable[[Key], Callable[[], Any]],
                                                     Callable[[], None], Callable[[int], Any]]:
    """(make a timed call for a shape, device sync, thread setter) for 'ours' or 'torch'."""
    rng = np.random.default_rng(0)

    def host(shape: tuple[int, int]) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    if impl == "torch":
        import torch

        device = "cuda" if backend == "cupy" else "cpu"
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        torch.set_grad_enabled(False)

        def make(key: Key) -> Callable[[], Any]:
            M, K, N = key
            a = torch.from_numpy(host((M, K))).to(device)
            b = torch.from_numpy(host((K, N))).to(device)
            return lambda: torch.matmul(a, b)

        return make, sync, torch.set_num_threads

    if backend == "cupy":
        import cupy as xp

        def sync() -> None:
            xp.cuda.Device().synchronize()
    else:
        xp = np

        def sync() -> None:
            return None

    def make(key: Key) -> Callable[[], Any]:
        M, K, N = key
        a, b = xp.asarray(host((M, K))), xp.asarray(host((K, N)))
        return lambda: xp.matmul(a, b)

    return make, sync, lambda threads: None


def measure_rates(impl: str, backend: str, case_names: list[str], quick: bool,
                  threads: dict[str, int]) -> dict[str, Any]:
    """GFLOP/s of every distinct matmul shape of each case, at `threads[case]` threads."""
    from threadpoolctl import threadpool_limits

    make, sync, set_threads = _matmul_maker(impl, backend)
    min_seconds = 0.002 if quick else 0.03
    out: dict[str, Any] = {}
    for name in case_names:
        case = CASES[name]
        config = case_config(case, quick)
        rates: dict[str, float] = {}
        # On one CPU thread, process CPU time is the matmul's own time even when other
        # processes share the cores; with more threads (or a GPU) only wall time works.
        one_cpu_thread = threads[name] == 1 and backend != "cupy"
        clock = time.process_time if one_cpu_thread else time.perf_counter
        with threadpool_limits(limits=threads[name]):
            set_threads(threads[name])
            for shape in case.matmuls(config):
                key = _key(shape)
                label = "x".join(map(str, key))
                if label in rates:
                    continue
                seconds = _seconds_per_call(make(key), sync, min_seconds, clock)
                rates[label] = _sig(2 * key[0] * key[1] * key[2] / seconds / 1e9)
        out[name] = {"threads": threads[name], "gflops_by_shape": rates,
                     "clock": clock.__name__}
    return out


def summarise(name: str, quick: bool, rates: dict[str, dict[str, Any]],
              steps_per_second: dict[str, float | None],
              cpu_steps_per_second: dict[str, float | None]) -> dict[str, Any]:
    """The case's matmul FLOPs, its roofline per library and each side's achieved fraction.

    rates: library ('ours' or 'torch') -> that library's `measure_rates` entry for the
    case. steps_per_second: implementation -> its median step rate (None: not run);
    cpu_steps_per_second: the same from process CPU time (given on one thread only).
    Our step is held against our array library's roofline, torch's against torch's.
    """
    case = CASES[name]
    shapes = case.matmuls(case_config(case, quick))
    total_flops = sum(s.flops for s in shapes)
    by_label: dict[str, dict[str, Any]] = {}
    for s in shapes:
        label = "x".join(map(str, _key(s)))
        entry = by_label.setdefault(label, {"shape": label, "uses": [], "gflop_per_step": 0.0})
        entry["uses"].append(s.label if s.count == 1 else f"{s.label} x{s.count}")
        entry["gflop_per_step"] += s.flops / 1e9
    result: dict[str, Any] = {
        "flop_per_step": total_flops,
        "gflop_per_step": _sig(total_flops / 1e9),
        "shapes": sorted(by_label.values(), key=lambda e: -e["gflop_per_step"]),
    }
    for lib, entry in rates.items():
        gflops = entry["gflops_by_shape"]
        bound_seconds = sum(s.flops / (gflops["x".join(map(str, _key(s)))] * 1e9)
                            for s in shapes)
        roof = total_flops / bound_seconds / 1e9
        side: dict[str, Any] = {"roofline_gflops": _sig(roof),
                                "matmul_bound_steps_per_s": _sig(1 / bound_seconds)}
        sps = steps_per_second.get(lib)
        if sps:
            achieved = total_flops * sps / 1e9
            side["achieved_gflops"] = _sig(achieved)
            side["fraction_of_roofline"] = _sig(achieved / roof)
        cpu_sps = cpu_steps_per_second.get(lib)
        if cpu_sps:
            side["fraction_of_roofline_by_cpu_time"] = _sig(total_flops * cpu_sps / 1e9 / roof)
        result[lib] = side
        for shape in result["shapes"]:
            shape[f"{lib}_gflops"] = gflops[shape["shape"]]
    for shape in result["shapes"]:
        shape["gflop_per_step"] = _sig(shape["gflop_per_step"])
    return result
