"""How many CPU threads the library computes on, and the helpers that split work over them.

NumPy runs its matmuls on all of BLAS's threads, but every elementwise ufunc
(an `exp` over a word LM's logits, say) on one. Where such a pass is big and
splits into independent rows, `parallel_rows` hands row blocks to worker
threads: NumPy releases the GIL inside its loops, so the blocks run at once.

`set_num_threads(n)` sizes that pool and takes BLAS's threading over: BLAS
runs one thread per call and `matmul` splits each big product into one row
(or column) block per pool thread. Why not leave the matmuls to BLAS's own
threads: after each threaded call OpenBLAS's workers spin-wait (for about a
tenth of a second) on the cores the pool is about to use, which made a word
LM's softmax pass, run right after the decoder matmul, two to three times
slower than alone. With one kind of thread there is nothing to wait against.
Time loops are the exception: their products are small and many, and BLAS's
spinning workers answer each at once (`looped_matmul`); the next pass over the
pool stops those workers first.

Only the NumPy backend is split; a CuPy array is already spread over the GPU.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "get_num_threads",
    "set_num_threads",
    "parallel_rows",
    "matmul",
    "looped_matmul",
    "blas_threads",
    "owns_blas",
    "PARALLEL_ELEMENTS",
]

# The least work, in elements, a pool thread takes in an elementwise pass (`min_rows`
# of `parallel_rows` is this over a row's length): below it, handing a block to another
# thread costs more than the thread saves.
PARALLEL_ELEMENTS = 1 << 18

_lock = threading.Lock()
_num_threads: int | None = None  # None: not chosen yet (see _default_threads)
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas_libraries: list[Any] | None = None  # threadpoolctl's controllers of the loaded BLAS
_blas_stoppers: list[Any] | None = None  # OpenBLAS's blas_thread_shutdown_, where found
_blas_workers_awake = False  # BLAS ran threaded since its workers were last stopped


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
        if value and name == "TINYGRAD_RNN_NUM_THREADS":  # ours: a typo is said, not skipped
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return count


def get_num_threads() -> int:
    """Threads the library's own parallel passes use (BLAS keeps its own count)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


def set_num_threads(threads: int, blas: bool = True) -> None:
    """Compute on `threads` CPU threads, like `torch.set_num_threads`.

    The library's own pool gets `threads` workers. With `blas=True` (the default)
    the library also takes BLAS's threading over: BLAS is limited to one thread
    per call, process-wide until changed (through threadpoolctl), and `matmul`
    splits the library's big products over the pool instead. With `blas=False`
    BLAS keeps its own count, and `matmul` leaves products whole to BLAS while
    BLAS runs more than one thread (pool and BLAS threads would fight for the cores).

    The default, before any call, is the CPUs this process may use (or
    `TINYGRAD_RNN_NUM_THREADS` / `OMP_NUM_THREADS` / `OPENBLAS_NUM_THREADS`),
    with BLAS left as NumPy loaded it. Owning BLAS, the library assumes that no
    other thread of the process is inside a BLAS call while it computes: it
    changes BLAS's thread count around its time loops and stops OpenBLAS's
    workers after them.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"set_num_threads: threads must be an int >= 1; got {threads!r}")
    global _num_threads
    with _lock:
        _num_threads = threads
    if blas:
        for library in _blas_controllers():
            library.set_num_threads(1)


def _blas_controllers() -> list[Any]:
    """threadpoolctl's handle on each BLAS NumPy loaded (found once; a call through one
    is a plain C call, well under a microsecond)."""
    global _blas_libraries
    if _blas_libraries is None:
        from threadpoolctl import ThreadpoolController

        _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_libraries


def blas_threads() -> int:
    """Threads BLAS runs each call on now (1 when no BLAS library is found)."""
    return max((library.get_num_threads() or 1 for library in _blas_controllers()), default=1)


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
    if parts > 1 and _blas_workers_awake:
        _stop_blas_workers()  # or they spin on the cores the pool is about to use
    if parts == 1:
        work(0, rows)
        return
    bounds = [rows * k // parts for k in range(parts + 1)]
    pool = _workers(parts - 1)
    futures = []
    errors = []
    # Nothing leaves here while a range still runs, a Ctrl-C included: a worker left
    # writing into `out` or a recycled array would change numbers the caller reads next.
    try:
        for k in range(1, parts):
            futures.append(pool.submit(work, bounds[k], bounds[k + 1]))
        work(bounds[0], bounds[1])  # the calling thread takes the first range
    except BaseException as error:  # noqa: BLE001 - re-raised once the others finish
        errors.append(error)
    for future in futures:
        while True:
            try:
                future.result()
            except BaseException as error:  # noqa: BLE001
                errors.append(error)
                if not future.done():  # the wait itself was interrupted: wait again
                    continue
            break
    if errors:
        raise errors[0]


# A time loop's products of at least this many multiply-adds are worth a second core
# (see looped_matmul). Below it, one thread: BLAS's own threads would only add a hand-off.
_THREADED_MACS = 1 << 22
# A one-off product of at least this many is split over the pool. Waking a pool thread
# whose core sleeps costs 60-70 us on this kind of VM, so a split must save more than
# that: at (512, 145) @ (145, 128), 9.5M, one call took 120 us and the split 147 us; at
# 34M it went from 880 to 560 us.
_SPLIT_MACS = 1 << 24


def matmul(xp: Any, a: Any, b: Any, out: Any = None) -> Any:
    """a @ b for 2-D a (M, K) and b (K, N), into `out` (M, N) when given.

    Once `set_num_threads(n)` has taken BLAS over (BLAS on one thread, n > 1), a
    product of at least `_SPLIT_MACS` multiply-adds is cut along the longer of M
    and N into one block per pool thread, each block one single-threaded BLAS
    call writing its own rows (or columns) of `out`. Anything else is one
    `xp.matmul`: inside a threaded `looped_matmul` context, a recurrent op's
    other products go whole to BLAS's threads, awake for its loop anyway.

    The choice depends on shapes, thread counts and where the call is made, never
    on timing, so a seeded run repeats bit for bit. (A split gave the same bits as
    one single-threaded call on every shape tried here; BLAS's own threads did
    not, on the shapes where they split the inner dimension.)
    """
    rows, inner = a.shape
    cols = b.shape[1]
    if out is None:
        out = xp.empty((rows, cols), dtype=xp.result_type(a, b))
    if xp is not np or rows * cols * inner < _SPLIT_MACS or not owns_blas():
        return xp.matmul(a, b, out=out)
    if rows >= cols:
        parallel_rows(xp, rows, lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]))
    else:
        parallel_rows(xp, cols, lambda lo, hi: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi]))
    return out


@contextmanager
def looped_matmul(xp: Any, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> Iterator[Any]:
    """The matmul for a time loop of same-shape products, as a context.

    A step's product is too small to pay for waking a pool thread each step, so
    on NumPy, with the library owning BLAS, products of at least `_THREADED_MACS`
    multiply-adds get BLAS's own threads for the loop: its workers spin-wait
    between calls and answer at once. `matmul` called inside the context then
    leaves its products whole to those threads too. BLAS goes back to one thread
    after the context. A shape-only rule, so a seeded run repeats bit for bit.
    """
    macs = math.prod(a_shape) * b_shape[-1]
    if xp is not np or macs < _THREADED_MACS or not owns_blas():
        yield xp.matmul
        return
    with _blas_on_pool_threads():
        yield xp.matmul


def owns_blas() -> bool:
    """Whether the library splits work itself: a pool of several threads, BLAS on one."""
    return get_num_threads() > 1 and blas_threads() == 1


@contextmanager
def _blas_on_pool_threads() -> Iterator[None]:
    """BLAS on the pool's thread count for a while, then back on one. Its workers are
    left awake: the next pass over the pool stops them first (`_stop_blas_workers`)."""
    global _blas_workers_awake
    for library in _blas_controllers():
        library.set_num_threads(get_num_threads())
    try:
        yield
    finally:
        for library in _blas_controllers():
            library.set_num_threads(1)
        _blas_workers_awake = True


def _stop_blas_workers() -> None:
    """End OpenBLAS's worker threads now; its next threaded call starts them again.

    After a threaded call each worker spin-waits for about a tenth of a second, and a
    pool thread started meanwhile shares a core with it: a split (10000, 700) @ (700,
    100) took 10.5 ms right after a time loop, and 5.0 ms with the workers stopped.
    Stopping costs about 0.2 ms, so it happens only before a pass that needs the pool
    (`parallel_rows`), once per wake. It is `blas_thread_shutdown_`, the call OpenBLAS
    itself makes before a fork; other BLAS libraries, or an OpenBLAS without it, are
    left alone. Giving the big products to the spinning workers instead would be as
    fast, but BLAS's threads round some shapes differently, and whether a product came
    soon enough after a loop would then decide its bits.
    """
    global _blas_stoppers, _blas_workers_awake
    _blas_workers_awake = False
    if _blas_stoppers is None:
        _blas_stoppers = [
            stop
            for library in _blas_controllers()
            if library.internal_api == "openblas"
            and (stop := getattr(library.dynlib, "blas_thread_shutdown_", None)) is not None
        ]
    for stop in _blas_stoppers:
        stop()
