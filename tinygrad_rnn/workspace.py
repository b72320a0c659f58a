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
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np

__all__ = ["Workspace", "WorkspacePool", "POOL", "recycled_empty"]


class Workspace:
    """Named scratch arrays of one op call (one key: one set of shapes)."""

    __slots__ = ("key", "xp", "arrays", "memos")

    def __init__(self, key: Hashable, xp: Any):
        self.key = key
        self.xp = xp
        self.arrays: dict[str, Any] = {}
        self.memos: dict[Hashable, Any] = {}

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


class WorkspacePool:
    """Free workspaces by key, the least recently used dropped beyond `max_free`."""

    def __init__(self, max_free: int = 32):
        self.max_free = max_free
        self._free: OrderedDict[Hashable, list[Workspace]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def take(self, key: Hashable, xp: Any) -> Workspace:
        """A free workspace for `key` (same backend), or a new empty one."""
        key = (key, id(xp))
        with self._lock:
            stack = self._free.get(key)
            if stack:
                self._count -= 1
                workspace = stack.pop()
                if not stack:
                    del self._free[key]
                return workspace
        return Workspace(key, xp)

    def give_back(self, workspace: Workspace) -> None:
        """Return `workspace`: its arrays may be handed to the next call with its key."""
        with self._lock:
            self._free.setdefault(workspace.key, []).append(workspace)
            self._free.move_to_end(workspace.key)
            self._count += 1
            while self._count > self.max_free:
                oldest = next(iter(self._free))
                stack = self._free[oldest]
                stack.pop(0)
                self._count -= 1
                if not stack:
                    del self._free[oldest]

    def clear(self) -> None:
        """Drop every free workspace (frees their memory)."""
        with self._lock:
            self._free.clear()
            self._count = 0


POOL = WorkspacePool()
"""The pool the library's fused ops share."""


class _Recycler:
    """Arrays handed out before, by (backend, shape, dtype), reused once unreferenced."""

    def __init__(self, per_shape: int = 2, max_shapes: int = 64):
        self.per_shape = per_shape
        self.max_shapes = max_shapes
        self._arrays: OrderedDict[Hashable, list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def empty(self, xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        key = (id(xp), shape, np.dtype(dtype).str)
        with self._lock:
            arrays = self._arrays.get(key)
            if arrays is None:
                arrays = self._arrays[key] = []
                if len(self._arrays) > self.max_shapes:
                    self._arrays.popitem(last=False)
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
            return array


_RECYCLER = _Recycler()


def recycled_empty(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised array to hand out of an op: a big one no one uses any more, or new.

    Only worth it for large arrays (a first touch of fresh pages is what it saves).
    """
    return _RECYCLER.empty(xp, tuple(shape), dtype)
