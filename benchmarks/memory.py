"""Memory figures: peak and current RSS, and the stateful-training leak check.

The leak check runs the lm-small step (state carried and detached) and compares the
process's resident memory after the first and the last checkpoint: a tape or a
carried state that kept its history would grow it step after step. It runs in a
process of its own (see run.py), so nothing else shares the figures.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
from typing import Any

import cases

__all__ = ["peak_rss_mb", "current_rss_mb", "stateful_leak_check", "LEAK_TOLERANCE"]

LEAK_TOLERANCE = 0.05  # RSS after the last checkpoint within 5% of the first one


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    """This process's resident set size now, in MiB (the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except OSError:
        return peak_rss_mb()
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _device_used_mb(backend: str) -> float | None:
    """Bytes held by CuPy's memory pool, in MiB (None on the NumPy backend)."""
    if backend != "cupy":
        return None
    import cupy

    cupy.cuda.Device().synchronize()
    return cupy.get_default_memory_pool().used_bytes() / (1024 * 1024)


def stateful_leak_check(quick: bool, backend: str) -> dict[str, Any]:
    """Run stateful lm-small steps; RSS (and GPU pool) at the checkpoints and the verdict.

    Full: the real lm-small shapes, checkpoints after 100 and 1,000 steps. Quick: the
    tiny lm-small shapes, after 20 and 200 steps.
    """
    case = cases.CASES["lm-small"]
    config = cases.case_config(case, quick)
    checkpoints = (20, 200) if quick else (100, 1000)
    step = cases.build_step(case, "ours", config)
    rss: dict[str, float] = {}
    device: dict[str, float] = {}
    for i in range(1, checkpoints[-1] + 1):
        step()
        if i in checkpoints:
            gc.collect()
            rss[str(i)] = round(current_rss_mb(), 2)
            used = _device_used_mb(backend)
            if used is not None:
                device[str(i)] = round(used, 2)
    first, last = str(checkpoints[0]), str(checkpoints[-1])
    growth = (rss[last] - rss[first]) / rss[first]
    ok = growth <= LEAK_TOLERANCE
    result: dict[str, Any] = {
        "case": "lm-small",
        "config": config,
        "checkpoints": list(checkpoints),
        "rss_mb": rss,
        "rss_growth": round(growth, 4),
        "tolerance": LEAK_TOLERANCE,
    }
    if device:
        device_growth = (device[last] - device[first]) / max(device[first], 1e-9)
        result["device_pool_mb"] = device
        result["device_pool_growth"] = round(device_growth, 4)
        ok = ok and device_growth <= LEAK_TOLERANCE
    # A detached carried state has no tape: nothing from earlier steps stays reachable.
    state = step.carried[0]  # type: ignore[attr-defined]
    result["carried_state_tape_entries"] = sum(len(s.tape()) for s in state)
    ok = ok and result["carried_state_tape_entries"] == 0
    result["verdict"] = "pass" if ok else "FAIL"
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result
