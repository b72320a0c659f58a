"""Scratch memory kept across calls (`tinygrad_rnn.workspace`): reuse without aliasing.

The pool hands a workspace to one call at a time; the recycler reuses an array
only once nobody references it. The contract users see: an op's results and
gradients are never overwritten by a later call, and reusing memory changes
no number.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_host

import tinygrad_rnn as tr
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.workspace import WorkspacePool, _Recycler, recycled_empty


def test_a_workspace_given_back_is_reused_and_a_held_one_never_shared():
    pool = WorkspacePool()
    first = pool.take("key", np)
    array = first.empty("a", (3, 4), np.float32)
    second = pool.take("key", np)  # the first is still held: a new one
    assert second is not first
    pool.give_back(first)
    again = pool.take("key", np)
    assert again is first and again.empty("a", (3, 4), np.float32) is array
    assert pool.take("other key", np) is not first


def test_the_pool_keeps_at_most_max_free_workspaces():
    pool = WorkspacePool(max_free=3)
    held = [pool.take(k, np) for k in range(5)]
    for workspace in held:
        pool.give_back(workspace)
    assert sum(len(stack) for stack in pool._free.values()) == 3
    assert pool.take(4, np) is held[4]  # the most recent ones are kept
    assert pool.take(0, np) is not held[0]


def test_recycled_arrays_are_reused_only_once_unreferenced():
    a = recycled_empty(np, (5, 7), np.float32)
    b = recycled_empty(np, (5, 7), np.float32)
    assert b is not a
    address = id(a)
    view = a[1:]
    del a
    c = recycled_empty(np, (5, 7), np.float32)  # a view keeps the array in use
    assert id(c) != address
    del view
    assert id(recycled_empty(np, (5, 7), np.float32)) == address


def test_results_and_gradients_held_by_the_user_survive_later_calls():
    rng = np.random.default_rng(0)
    layer = tr.nn.Linear(8, 3000)
    x1 = tr.tensor(rng.standard_normal((400, 8)).astype(np.float32), requires_grad=True)
    x2 = tr.tensor(rng.standard_normal((400, 8)).astype(np.float32), requires_grad=True)
    targets = rng.integers(0, 3000, 400)
    y1 = layer(x1)
    kept = to_host(y1).copy()
    F.softmax_cross_entropy(y1, targets).backward()
    grad1 = to_host(x1.grad).copy()
    y2 = layer(x2)
    F.softmax_cross_entropy(y2, targets).backward()
    np.testing.assert_array_equal(to_host(y1), kept)
    np.testing.assert_array_equal(to_host(x1.grad), grad1)

    lstm = tr.nn.LSTM(4, 5)
    out1, (h1, c1) = lstm(tr.tensor(rng.standard_normal((3, 6, 4)).astype(np.float32)))
    saved = [to_host(a).copy() for a in (out1, h1, c1)]
    out1.sum().backward()
    for _ in range(2):
        out2, _ = lstm(tr.tensor(rng.standard_normal((3, 6, 4)).astype(np.float32)))
        out2.sum().backward()
    for a, b in zip((out1, h1, c1), saved):
        np.testing.assert_array_equal(to_host(a), b)


def test_reused_memory_changes_no_number():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 9, 3)).astype(np.float32)
    grads = []
    for _ in range(3):  # the first call allocates, later ones reuse the pooled buffers
        tr.manual_seed(0)
        lstm = tr.nn.LSTM(3, 6, num_layers=2)
        out, (h, c) = lstm(tr.tensor(x))
        (out.sum() + (h * c).sum()).backward()
        grads.append([to_host(p.grad) for p in lstm.parameters()])
    for later in grads[1:]:
        for a, b in zip(grads[0], later):
            np.testing.assert_array_equal(a, b)


def test_a_workspace_given_back_once_goes_to_one_taker_only():
    pool = WorkspacePool()
    pool.give_back(pool.take("key", np))
    assert pool.take("key", np) is not pool.take("key", np)


def test_a_recycled_array_keeps_the_dtype_asked_for():
    array = recycled_empty(np, (3, 11), np.float32)
    del array  # free to recycle
    assert recycled_empty(np, (3, 11), np.float64).dtype == np.float64


def test_the_pool_keeps_at_most_max_bytes_but_always_the_last_workspace():
    pool = WorkspacePool(max_free=10, max_bytes=1000)
    held = [pool.take(k, np) for k in range(4)]
    for k, workspace in enumerate(held):
        workspace.empty("a", (100 + 100 * k,), np.float32)  # 400, 800, 1200, 1600 bytes
    pool.give_back(held[0])
    pool.give_back(held[1])  # 1200 in all: the older goes
    assert pool._bytes == 800 and pool.take(0, np) is not held[0]
    pool.give_back(held[3])  # alone above the bound: kept, as the one given back last
    assert pool._bytes == 1600 and pool._count == 1
    assert pool.take(3, np) is held[3]


def test_the_recycler_keeps_at_most_max_bytes_of_shapes_but_always_the_current_one():
    recycler = _Recycler(per_shape=2, max_shapes=64, max_bytes=10_000)
    for n in range(1, 40):  # 39 shapes of 400 to 15,600 bytes, two arrays each
        a = recycler.empty(np, (n, 100), np.float32)
        b = recycler.empty(np, (n, 100), np.float32)
        assert recycler._bytes <= max(10_000, a.nbytes + b.nbytes)
        assert recycler._bytes == sum(x.nbytes for xs in recycler._arrays.values() for x in xs)
        del a, b
    big = recycler.empty(np, (39, 100), np.float32)  # the current shape, over the bound
    address = id(big)
    del big
    assert id(recycler.empty(np, (39, 100), np.float32)) == address  # still reused


def test_set_cache_bytes_bounds_both_caches_and_names_a_bad_value():
    from tinygrad_rnn import workspace

    before = (workspace.POOL.max_bytes, workspace._RECYCLER.max_bytes)
    try:
        workspace.set_cache_bytes(1 << 20)
        assert workspace.POOL.max_bytes == workspace._RECYCLER.max_bytes == 1 << 20
        for bad in (-1, 1.5, True, "1M"):
            with pytest.raises(ValueError, match=f"max_bytes must be an integer >= 0; got {bad!r}"):
                workspace.set_cache_bytes(bad)
    finally:
        workspace.POOL.max_bytes, workspace._RECYCLER.max_bytes = before
    workspace.clear_caches()
    assert workspace.POOL._count == workspace.POOL._bytes == workspace._RECYCLER._bytes == 0


# ---- mutation audit (s7) ---------------------------------------------------------------


def test_a_steady_take_and_give_back_loop_keeps_the_pools_byte_count_exact():
    """The steady loop the pool is for: take a workspace, give it back, many times. A
    take must subtract what its give_back added, or the count only grows and the pool
    soon evicts every other workspace as if over its bound. The existing test took once
    after a give_back, so a take that forgot the bytes passed."""
    pool = WorkspacePool(max_free=10, max_bytes=1000)
    other = pool.take("other", np)
    other.empty("a", (100,), np.float32)  # 400 bytes
    pool.give_back(other)
    for _ in range(5):
        workspace = pool.take("loop", np)
        workspace.empty("a", (100,), np.float32)  # 400 bytes
        pool.give_back(workspace)
        assert pool._bytes == 800 and pool._count == 2
    assert pool.take("other", np) is other  # 800 <= 1000: never evicted
    assert pool._bytes == 400
