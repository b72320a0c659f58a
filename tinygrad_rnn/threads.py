"""How many CPU threads the library computes on, and the row-parallel helper that uses them.

NumPy runs its matmuls on all of BLAS's threads, but every elementwise ufunc
(an `exp` over a word LM's logits, say) on one. Where such a pass is big and
splits into independent rows, `parallel_rows` hands row blocks to worker
threads: NumPy releases the GIL inside its loops, so the blocks run at once.
One setting, `set_num_threads`, sizes both that pool and BLAS's (through
threadpoolctl), so a benchmark that pins threads pins all of them.

Only the NumPy backend is split; a CuPy array is already spread over the GPU.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["get_num_threads", "set_num_threads", "parallel_rows"]

_lock = threading.Lock()
_num_threads: int | None = None  # None: not chosen yet (see _default_threads)
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _default_threads() -> int:
    """The CPUs this process may use, capped by the usual thread variables where set."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    for name in ("TINYGRAD_RNN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return min(count, int(value))
    return count


def get_num_threads() -> int:
    """Threads the library's own parallel passes use (BLAS keeps its own count)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


def set_num_threads(threads: int, blas: bool = True) -> None:
    """Compute on `threads` CPU threads: the library's row-parallel passes and, with
    `blas=True`, NumPy's BLAS too (threadpoolctl's limit, process-wide until changed).

    Like `torch.set_num_threads`; the default is the CPUs this process may use
    (or `TINYGRAD_RNN_NUM_THREADS` / `OMP_NUM_THREADS` / `OPENBLAS_NUM_THREADS`).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"set_num_threads: threads must be an int >= 1; got {threads!r}")
    global _num_threads
    with _lock:
        _num_threads = threads
    if blas:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)


def _forget_pool_after_fork() -> None:
    """A forked child has none of the parent's threads: its first parallel pass makes a
    new pool (the copied one would queue work for threads that do not exist)."""
    global _lock, _pool, _pool_size
    _lock = threading.Lock()
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _workers(count: int) -> ThreadPoolExecutor:
    """The shared pool, grown to `count` workers when asked for more."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < count:
            # The smaller pool is dropped, not shut down: another thread may still be
            # handing it work. Its idle workers end once it is garbage.
            _pool = ThreadPoolExecutor(count, thread_name_prefix="tinygrad_rnn")
            _pool_size = count
        return _pool


def parallel_rows(xp: Any, rows: int, work: Callable[[int, int], None], min_rows: int = 1) -> None:
    """Call `work(start, stop)` over contiguous row ranges covering [0, rows).

    On NumPy with more than one thread, the ranges run at once, one per thread
    (at least `min_rows` rows each, so small jobs stay on the calling thread);
    otherwise `work(0, rows)` runs once, here. `work` must only touch its own
    rows. An exception in any range is raised here after all have finished.
    """
    threads = get_num_threads() if xp is np else 1
    parts = max(1, min(threads, rows // max(min_rows, 1)))
    if parts == 1:
        work(0, rows)
        return
    bounds = [rows * k // parts for k in range(parts + 1)]
    pool = _workers(parts - 1)
    futures = [pool.submit(work, bounds[k], bounds[k + 1]) for k in range(1, parts)]
    errors = []
    try:
        work(bounds[0], bounds[1])  # the calling thread takes the first range
    except BaseException as error:  # noqa: BLE001 - re-raised once the others finish
        errors.append(error)
    for future in futures:
        try:
            future.result()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)
    if errors:
        raise errors[0]
