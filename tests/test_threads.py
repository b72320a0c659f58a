"""The library's thread setting and its row-parallel helper (tinygrad_rnn.threads)."""

import threading

import numpy as np
import pytest

from tinygrad_rnn import threads


@pytest.fixture
def restore_threads():
    before = threads.get_num_threads()
    yield
    threads.set_num_threads(before, blas=False)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_set_num_threads_names_the_bad_value(bad, restore_threads):
    with pytest.raises(ValueError, match=r"threads must be an int >= 1; got"):
        threads.set_num_threads(bad)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("rows", [0, 1, 4, 7, 100])
def test_parallel_rows_covers_each_row_once(count, rows, restore_threads):
    threads.set_num_threads(count, blas=False)
    seen = np.zeros(rows, dtype=int)
    callers = set()

    def work(start, stop):
        callers.add(threading.get_ident())
        seen[start:stop] += 1

    threads.parallel_rows(np, rows, work, min_rows=2)
    assert (seen == 1).all()
    # Ranges of at least min_rows rows, one per thread at most.
    assert len(callers) <= max(1, min(count, rows // 2))


def test_parallel_rows_splits_over_threads_and_raises_a_range_error(restore_threads):
    threads.set_num_threads(2, blas=False)
    callers = set()

    def work(start, stop):
        callers.add(threading.get_ident())
        if start > 0:
            raise RuntimeError(f"rows {start}:{stop}")

    with pytest.raises(RuntimeError, match="rows 5:10"):
        threads.parallel_rows(np, 10, work)
    assert len(callers) == 2


def test_non_numpy_arrays_run_on_the_calling_thread(restore_threads):
    threads.set_num_threads(4, blas=False)
    calls = []
    threads.parallel_rows(object(), 100, lambda a, b: calls.append((a, b)))
    assert calls == [(0, 100)]


def test_default_follows_the_thread_variables(monkeypatch):
    monkeypatch.setenv("TINYGRAD_RNN_NUM_THREADS", "1")
    assert threads._default_threads() == 1
    monkeypatch.delenv("TINYGRAD_RNN_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert threads._default_threads() >= 1


def test_set_num_threads_also_limits_blas(restore_threads):
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits():  # restores BLAS's own count afterwards
        threads.set_num_threads(1)
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(n == 1 for n in blas)
        assert threads.get_num_threads() == 1


def test_a_forked_child_gets_a_pool_of_its_own(restore_threads):
    """The parent's worker threads do not exist in a forked child: the child's parallel
    pass must still run (on a new pool), not wait forever on the copied one."""
    import multiprocessing

    threads.set_num_threads(2, blas=False)
    threads.parallel_rows(np, 10, lambda a, b: None)  # the parent's pool exists now
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        result = pool.apply_async(_split_in_child)
        assert result.get(timeout=30) == [(0, 5), (5, 10)]


def _split_in_child():
    seen = []
    threads.parallel_rows(np, 10, lambda a, b: seen.append((a, b)))
    return sorted(seen)
