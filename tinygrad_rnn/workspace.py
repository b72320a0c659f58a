"""Scratch buffers kept across calls, so a training loop stops paying for fresh memory.

A fused op's big temporaries (gate buffers, the softmax of the logits, ...)
have the same shapes every step. Allocating them anew costs more than it
seems: large arrays come straight from the OS, and each first touch of a
page faults (about a microsecond apiece on a virtual machine, hundreds per
LSTM call). So an op takes a `Workspace` from `POOL` with a key that fixes
all its shapes, fills it, and gives it back once its backward is done (or
right after the forward when nothing was recorded). A workspace is never
shared: while one call holds it, another call with the same key gets a new
one, and both return to the pool afterwards.

Arrays an op hands out (its output, the gradients it returns) cannot be
given back: their new owners keep them as long as they like. For those,
`recycled_empty` returns an array of the right shape that nobody references
any more (its reference count says so, as CPython keeps it), else a new one:
the logits of the last step, dropped when the step ended, become this step's.

Both keep memory nobody may be using, so both are bounded in bytes as well as in
count (`set_cache_bytes`, default 512 MiB each): with batches of many shapes
(variable lengths, buckets) the least recently used shapes go first. The shape
in use now is always kept, however big, so a steady loop keeps its buffers.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np

__all__ = [
    "Workspace",
    "WorkspacePool",
    "POOL",
    "recycled_empty",
    "set_cache_bytes",
    "clear_caches",
]


class Workspace:
    """Named scratch arrays of one op call (one key: one set of shapes)."""

    __slots__ = ("key", "xp", "arrays", "memos")

    def __init__(self, key: Hashable, xp: Any):
        self.key = key
        self.xp = xp
        self.arrays: dict[str, Any] = {}
        self.memos: dict[Hashable, Any] = {}

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays (the memos are views of them, or small)."""
        return sum(array.nbytes for array in self.arrays.values())

    def memo(self, name: Hashable, make: Any) -> Any:
        """`make()`, built once per workspace: views and closures over its arrays, which
        stay valid for every call with its key (the arrays do not change)."""
        value = self.memos.get(name)
        if value is None:
            value = self.memos[name] = make()
        return value

    def empty(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """The array `name`, uninitialised; allocated on first use, reused after."""
        array = self.arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self.arrays[name] = self.xp.empty(shape, dtype=dtype)
        return array

    def zeros(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        array = self.empty(name, shape, dtype)
        array.fill(0)
        return array


# Each cache's default bound on the bytes it keeps (see the module's docstring).
DEFAULT_CACHE_BYTES = 512 << 20


class WorkspacePool:
    """Free workspaces by key, the least recently used dropped beyond `max_free` of them
    or beyond `max_bytes` in all (the one given back last is kept either way)."""

    def __init__(self, max_free: int = 32, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_free = max_free
        self.max_bytes = max_bytes
        # key -> free workspaces with their sizes in bytes, measured when given back
        self._free: OrderedDict[Hashable, list[tuple[Workspace, int]]] = OrderedDict()
        self._count = 0
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, key: Hashable, xp: Any) -> Workspace:
        """A free workspace for `key` (same backend), or a new empty one."""
        key = (key, id(xp))
        with self._lock:
            stack = self._free.get(key)
            if stack:
                workspace, size = stack.pop()
                self._count -= 1
                self._bytes -= size
                if not stack:
                    del self._free[key]
                return workspace
        return Workspace(key, xp)

    def give_back(self, workspace: Workspace) -> None:
        """Return `workspace`: its arrays may be handed to the next call with its key."""
        size = workspace.nbytes
        with self._lock:
            self._free.setdefault(workspace.key, []).append((workspace, size))
            self._free.move_to_end(workspace.key)
            self._count += 1
            self._bytes += size
            while self._count > 1 and (self._count > self.max_free or self._bytes > self.max_bytes):
                oldest = next(iter(self._free))
                stack = self._free[oldest]
                _, dropped = stack.pop(0)
                self._count -= 1
                self._bytes -= dropped
                if not stack:
                    del self._free[oldest]

    def clear(self) -> None:
        """Drop every free workspace (frees their memory)."""
        with self._lock:
            self._free.clear()
            self._count = 0
            self._bytes = 0


POOL = WorkspacePool()
"""The pool the library's fused ops share."""


class _Recycler:
    """Arrays handed out before, by (backend, shape, dtype), reused once unreferenced.

    Up to `per_shape` arrays a shape; shapes beyond `max_shapes`, or beyond `max_bytes`
    of arrays in all, are dropped least recently used first (never the shape asked for
    now). Dropping only ends the cache's reference: an array still in use stays valid.
    """

    def __init__(
        self, per_shape: int = 2, max_shapes: int = 64, max_bytes: int = DEFAULT_CACHE_BYTES
    ):
        self.per_shape = per_shape
        self.max_shapes = max_shapes
        self.max_bytes = max_bytes
        self._arrays: OrderedDict[Hashable, list[Any]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def empty(self, xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        key = (id(xp), shape, np.dtype(dtype).str)
        with self._lock:
            arrays = self._arrays.get(key)
            if arrays is None:
                arrays = self._arrays[key] = []
            else:
                self._arrays.move_to_end(key)
            for array in arrays:
                # References: the list, this loop's name, getrefcount's argument. Any
                # other (a Tensor, a view through .base, a closure) means it is in use.
                if sys.getrefcount(array) == 3:
                    return array
            array = xp.empty(shape, dtype=dtype)
            if len(arrays) < self.per_shape:
                arrays.append(array)
                self._bytes += array.nbytes
            self._evict()
            return array

    def _evict(self) -> None:
        """Drop the least recently used shapes while over a bound; the shape just asked
        for is the most recent, so it goes last, never (one shape always stays)."""
        while len(self._arrays) > 1 and (
            len(self._arrays) > self.max_shapes or self._bytes > self.max_bytes
        ):
            self._bytes -= sum(a.nbytes for a in self._arrays.popitem(last=False)[1])

    def clear(self) -> None:
        with self._lock:
            self._arrays.clear()
            self._bytes = 0


_RECYCLER = _Recycler()


def recycled_empty(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised array to hand out of an op: a big one no one uses any more, or new.

    Only worth it for large arrays (a first touch of fresh pages is what it saves).
    """
    return _RECYCLER.empty(xp, tuple(shape), dtype)


def set_cache_bytes(max_bytes: int) -> None:
    """Bound the bytes each of the two caches (free workspaces, recycled arrays) keeps.

    Lower it when batches come in many shapes and memory is short; raise it when
    many big shapes recur and page faults show in a profile. Applies from the
    next time each cache stores something.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"set_cache_bytes: max_bytes must be an integer >= 0; got {max_bytes!r}")
    POOL.max_bytes = _RECYCLER.max_bytes = max_bytes


def clear_caches() -> None:
    """Drop every free workspace and recycled array now (arrays in use stay valid)."""
    POOL.clear()
    _RECYCLER.clear()
