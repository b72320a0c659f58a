"""The library's thread setting and its row-parallel helper (tinygrad_rnn.threads)."""

import concurrent.futures
import os
import threading
import time

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


@pytest.mark.parametrize("where", ["submitting", "waiting"])
def test_a_ctrl_c_in_parallel_rows_returns_only_once_every_range_is_done(
    where, restore_threads, monkeypatch
):
    """A KeyboardInterrupt while handing out ranges, or while waiting for them, is raised
    only after the ranges already running have finished writing the caller's rows."""
    threads.set_num_threads(3, blas=False)
    out = np.zeros(3)
    started = threading.Event()

    def work(start, stop):
        if start > 0:  # a worker's range: slow, like a big block of rows; the first slower
            started.set()
            time.sleep(0.3 if start == 1 else 0.05)
        out[start:stop] = 1.0

    pool = threads._workers(2)
    real_submit, real_result = type(pool).submit, concurrent.futures.Future.result
    calls = []

    def submit(self, *args, **kwargs):  # Ctrl-C lands between the first and second submit
        calls.append(1)
        if len(calls) == 2:
            started.wait(1.0)
            raise KeyboardInterrupt
        return real_submit(self, *args, **kwargs)

    def result(self, *args, **kwargs):  # Ctrl-C lands in the first wait
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_result(self, *args, **kwargs)

    if where == "submitting":
        monkeypatch.setattr(type(pool), "submit", submit)
    else:
        monkeypatch.setattr(concurrent.futures.Future, "result", result)
    with pytest.raises(KeyboardInterrupt):
        threads.parallel_rows(np, 3, work)
    written = out.copy()
    time.sleep(0.4)
    np.testing.assert_array_equal(out, written)  # no range still writing
    assert written[1] == 1.0


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


def test_thread_variables_cap_the_cpus_and_ours_comes_first(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setenv("TINYGRAD_RNN_NUM_THREADS", str(cpus + 5))
    assert threads._default_threads() == cpus  # a cap, never more than the CPUs
    monkeypatch.setenv("TINYGRAD_RNN_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", str(cpus))
    assert threads._default_threads() == 1


@pytest.mark.parametrize("bad", ["abc", "0", "-2", "1.5"])
def test_a_bad_thread_variable_of_ours_is_refused_naming_it(monkeypatch, bad):
    monkeypatch.setenv("TINYGRAD_RNN_NUM_THREADS", bad)
    with pytest.raises(ValueError, match=f"TINYGRAD_RNN_NUM_THREADS must be an integer >= 1; "
                                         f"got {bad!r}"):  # fmt: skip
        threads._default_threads()
    monkeypatch.delenv("TINYGRAD_RNN_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", bad)  # another library's: not ours to judge
    assert threads._default_threads() >= 1


@pytest.mark.parametrize("count", [1, 2, 3])
def test_set_num_threads_takes_blas_over(count, restore_threads):
    """The pool gets `count` threads; BLAS one per call (the library splits itself)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits():  # restores BLAS's own count afterwards
        threads.set_num_threads(count)
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(n == 1 for n in blas)
        assert threads.blas_threads() == 1
        assert threads.get_num_threads() == count
        assert threads.owns_blas() == (count > 1)


def test_without_blas_the_library_leaves_products_to_blas(restore_threads, monkeypatch):
    """blas=False with BLAS on several threads: no split (pool x BLAS threads would
    oversubscribe the cores)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        threads.set_num_threads(2, blas=False)
        assert not threads.owns_blas()
        split = _record_splits(monkeypatch)
        a, b = _operands(300, 200, 400, np.float64)
        np.testing.assert_array_equal(threads.matmul(np, a, b), a @ b)
        assert split == []


def _record_splits(monkeypatch):
    """The (rows, ...) of each parallel_rows call matmul makes, recorded."""
    calls = []
    real = threads.parallel_rows

    def recording(xp, rows, work, min_rows=1):
        calls.append(rows)
        real(xp, rows, work, min_rows)

    monkeypatch.setattr(threads, "parallel_rows", recording)
    return calls


def _operands(rows, inner, cols, dtype):
    rng = np.random.default_rng(rows + cols)
    return rng.standard_normal((rows, inner)).astype(dtype), rng.standard_normal(
        (inner, cols)
    ).astype(dtype)


@pytest.mark.parametrize(
    "rows, inner, cols, split_rows",
    [(700, 101, 400, 700), (200, 101, 1000, 1000), (1, 700, 30000, 30000)],
)
@pytest.mark.parametrize("transposed", [False, True])
def test_big_products_split_over_the_pool_and_match_one_call(
    rows, inner, cols, split_rows, transposed, restore_threads, monkeypatch
):
    from threadpoolctl import threadpool_limits

    with threadpool_limits():
        threads.set_num_threads(2)
        split = _record_splits(monkeypatch)
        a, b = _operands(rows, inner, cols, np.float64)
        if transposed:  # strided operands, as the backward passes hand them over
            a, b = np.asfortranarray(a), np.asfortranarray(b)
        out = np.full((rows, cols), np.nan)
        result = threads.matmul(np, a, b, out=out)
        assert result is out and split == [split_rows]
        np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)


def test_small_products_stay_whole(restore_threads, monkeypatch):
    from threadpoolctl import threadpool_limits

    with threadpool_limits():
        threads.set_num_threads(2)
        split = _record_splits(monkeypatch)
        a, b = _operands(64, 64, 64, np.float32)
        np.testing.assert_allclose(threads.matmul(np, a, b), a @ b, rtol=1e-6)
        assert split == []


def test_a_time_loop_gets_blas_threads_and_big_products_after_it_still_split(
    restore_threads, monkeypatch
):
    """A loop of mid-size products runs on BLAS's own threads; after it BLAS is back on
    one thread and a big product splits over the pool as before: the choice never
    depends on timing, so a seeded run repeats bit for bit."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits():
        threads.set_num_threads(2)
        split = _record_splits(monkeypatch)
        with threads.looped_matmul(np, (512, 145), (145, 128)) as step_matmul:
            assert threads.blas_threads() == 2
            assert step_matmul is np.matmul
        assert threads.blas_threads() == 1
        a, b = _operands(700, 101, 400, np.float32)
        threads.matmul(np, a, b)
        assert split == [700]
        with threads.looped_matmul(np, (400, 101), (101, 20)):
            assert threads.blas_threads() == 1, "a small step product stays on one thread"


def test_a_failing_time_loop_still_puts_blas_back_on_one_thread(restore_threads):
    from threadpoolctl import threadpool_limits

    with threadpool_limits():
        threads.set_num_threads(2)
        with pytest.raises(RuntimeError, match="step failed"):
            with threads.looped_matmul(np, (512, 145), (145, 128)):
                raise RuntimeError("step failed")
        assert threads.blas_threads() == 1


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


@pytest.mark.parametrize("shape", [(700, 101, 10000), (10000, 700, 100), (700, 10000, 100),
                                   (1, 700, 10000), (512, 896, 145)])  # fmt: skip
def test_a_split_product_has_the_bits_of_one_single_threaded_call(shape, restore_threads):
    """What makes a seeded run repeat bit for bit whatever the timing: cutting the rows or
    columns of a product does not change how each element is summed."""
    from threadpoolctl import threadpool_limits

    rows, inner, cols = shape
    a, b = _operands(rows, inner, cols, np.float32)
    with threadpool_limits():
        threads.set_num_threads(2)
        np.testing.assert_array_equal(threads.matmul(np, a, b), np.matmul(a, b))


def test_a_seeded_run_repeats_bit_for_bit_however_long_its_steps_take(restore_threads):
    """An LSTM LM whose step products run on BLAS's threads (a time loop) and whose head
    is split over the pool: two runs with the same seed, one of them pausing between
    steps, end with the same weights to the bit."""
    import time

    from threadpoolctl import threadpool_limits

    import tinygrad_rnn as tr
    import topologies

    def train(pause: float) -> list[np.ndarray]:
        tr.manual_seed(0)
        spec = topologies.ModelSpec(
            cell="lstm", hidden_size=256, vocab_size=3000, output_size=3000,
            embedding_size=32, head="probabilities",
        )  # fmt: skip
        topology = topologies.create("many-to-many-synced")
        model = topology.build(spec)
        optimizer = tr.optim.SGD(model.parameters(), lr=1.0)
        ids = np.random.default_rng(1).integers(0, 3000, (32, 11))
        for _ in range(3):
            out = topology.loss(model, ids[:, :-1], ids[:, 1:])
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            time.sleep(pause)
        return [p.numpy().copy() for p in model.parameters()]

    with threadpool_limits():
        threads.set_num_threads(2)
        quick, paused = train(0.0), train(0.15)
    for a, b in zip(quick, paused):
        np.testing.assert_array_equal(a, b)


def test_a_product_right_after_a_time_loop_has_the_bits_of_one_long_after(restore_threads):
    """BLAS's threads sum some shapes in another order (they split the inner dimension);
    a product must not go to them just because it comes right after a loop that used
    them, or the same run would round differently on a slower or busier machine."""
    import time

    from threadpoolctl import threadpool_limits

    a, b = _operands(10000, 700, 100, np.float32)
    with threadpool_limits():
        threads.set_num_threads(2)
        with threads.looped_matmul(np, (512, 145), (145, 128)):
            pass
        right_after = threads.matmul(np, a, b)
        time.sleep(0.2)
        long_after = threads.matmul(np, a, b)
    np.testing.assert_array_equal(right_after, long_after)


def test_blas_workers_woken_by_a_loop_are_stopped_before_the_next_pool_pass(
    restore_threads, monkeypatch
):
    """A time loop leaves BLAS's workers awake (spinning); the next pass that needs the
    pool stops them first, once, and BLAS starts them again when a loop needs them."""
    from threadpoolctl import threadpool_limits

    stops = []
    real_stop = threads._stop_blas_workers
    monkeypatch.setattr(threads, "_stop_blas_workers", lambda: (stops.append(1), real_stop()))
    a, b = _operands(512, 145, 128, np.float32)
    with threadpool_limits():
        threads.set_num_threads(2)
        for _ in range(2):
            with threads.looped_matmul(np, a.shape, b.shape) as step_matmul:
                product = step_matmul(a, b)
            assert threads._blas_workers_awake
            threads.parallel_rows(np, 10, lambda lo, hi: None)
            threads.parallel_rows(np, 10, lambda lo, hi: None)
            assert not threads._blas_workers_awake
            np.testing.assert_allclose(product, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
        assert len(stops) == 2  # one per wake, not one per pass


def test_an_ops_products_inside_its_threaded_loop_context_stay_whole_on_blas_threads(
    restore_threads, monkeypatch
):
    """A recurrent op runs its other products inside its loop's context: where the loop
    runs on BLAS's threads, a big product there is one BLAS call on the pool's thread
    count, not a split; where it does not, the same product splits over the pool."""
    from threadpoolctl import threadpool_limits

    seen = []
    with threadpool_limits():
        threads.set_num_threads(2)
        split = _record_splits(monkeypatch)
        real = np.matmul
        monkeypatch.setattr(np, "matmul", lambda *a, **k: (seen.append(threads.blas_threads()),
                                                           real(*a, **k))[1])  # fmt: skip
        a, b = _operands(700, 101, 400, np.float32)
        with threads.looped_matmul(np, (512, 145), (145, 128)):
            out = threads.matmul(np, a, b)
        assert split == [] and seen == [2] and threads.blas_threads() == 1
        np.testing.assert_allclose(out, real(a, b), rtol=1e-5)
        seen.clear()
        with threads.looped_matmul(np, (400, 201), (201, 20)):  # a loop too small for them
            threads.matmul(np, a, b)
        assert split == [700] and seen == [1, 1]
