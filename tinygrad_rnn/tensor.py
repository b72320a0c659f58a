"""Tensor and tape: the autograd engine.

Every differentiable op calls `record`, which appends one `TapeEntry` to the
graph of its output: the entry holds the inputs and a closure that maps the
output's gradient to the inputs' gradients. Entries carry a global sequence
number, so the tape of any result is its reachable entries in execution order.
The tape belongs to the graph: nothing global keeps entries alive, and an
entry dies with the last tensor that can reach it (validation or generation
without `no_grad` leaks nothing).

`Tensor.backward()` replays the tape in reverse and releases each entry as it
goes, so a long training run holds at most one step's graph. A second
backward through a released entry raises `GraphReleasedError`; there is no
`retain_graph`. A carried recurrent state must be `detach()`-ed between
batches, and forgetting to do so is reported by that same error.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .backend import BackendMismatchError, backend_of, get_array_module, get_backend
from .workspace import recycled_empty

__all__ = [
    "Tensor",
    "TapeEntry",
    "GraphReleasedError",
    "tensor",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "record",
    "as_array",
]

BackwardFn = Callable[[Any], Sequence[Any]]


class GraphReleasedError(RuntimeError):
    """backward() reached a tape entry that an earlier backward already used."""


_sequence = itertools.count()
_grad_mode = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_grad_mode, "enabled", True)


@contextlib.contextmanager
def _grad_enabled(flag: bool) -> Iterator[None]:
    previous = is_grad_enabled()
    _grad_mode.enabled = flag
    try:
        yield
    finally:
        _grad_mode.enabled = previous


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Context manager: ops inside record nothing (evaluation, generation)."""
    return _grad_enabled(False)


def enable_grad() -> contextlib.AbstractContextManager[None]:
    """Context manager: turn recording back on inside a `no_grad` block."""
    return _grad_enabled(True)


class TapeEntry:
    """One recorded op: its inputs and how to push a gradient back to them."""

    __slots__ = ("op", "inputs", "backward_fn", "seq", "released", "__weakref__")

    def __init__(self, op: str, inputs: tuple[Tensor, ...], backward_fn: BackwardFn):
        self.op = op
        self.inputs = inputs
        self.backward_fn: BackwardFn | None = backward_fn
        self.seq = next(_sequence)
        self.released = False

    def release(self) -> None:
        """Drop the inputs and the saved arrays; the entry can no longer run."""
        self.inputs = ()
        self.backward_fn = None
        self.released = True

    def __repr__(self) -> str:
        state = "released" if self.released else f"{len(self.inputs)} inputs"
        return f"TapeEntry({self.op!r}, #{self.seq}, {state})"


class Tensor:
    """An n-d array (NumPy or CuPy) that can record the ops applied to it.

    Build one with `tr.tensor(...)`. `.data` is the raw array on its backend,
    `.grad` the accumulated gradient (same backend, same dtype) after backward.
    """

    __slots__ = ("data", "requires_grad", "grad", "_entry", "name", "__weakref__")
    __array_priority__ = 1000  # so `ndarray * Tensor` defers to Tensor.__rmul__

    def __init__(
        self,
        data: Any,
        requires_grad: bool = False,
        _entry: TapeEntry | None = None,
        name: str | None = None,
    ):
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad: Any = None
        self._entry = _entry
        self.name = name

    # ---- facts about the array -------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def backend(self) -> str:
        """'numpy' or 'cupy': where the data lives."""
        return backend_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._entry is None

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        """The truth of a one-element tensor; any other size is ambiguous, as in NumPy."""
        if self.data.size != 1:
            raise ValueError(
                f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                "use .numpy().any() or .numpy().all()"
            )
        return bool(self.data.reshape(()))

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        where = "" if self.backend == "numpy" else f", backend={self.backend!r}"
        return f"tensor({self.numpy()!r}{grad}{where})"

    # ---- conversion ------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A host NumPy array (copied from the GPU when on CuPy)."""
        return self.data.get() if self.backend == "cupy" else np.asarray(self.data)

    def item(self) -> float | int:
        return self.data.item()

    def detach(self) -> Tensor:
        """Same data, cut from the graph: nothing flows back through the result."""
        return Tensor(self.data)

    def to(self, backend: str) -> Tensor:
        """A copy on another backend ('numpy' or 'cupy'); a leaf, like `detach`."""
        target = get_backend(backend)
        if target.name == self.backend:
            return self
        return Tensor(target.asarray(self.data), requires_grad=self.requires_grad)

    def astype(self, dtype: Any) -> Tensor:
        from . import ops

        return ops.astype(self, dtype)

    def tape(self) -> list[TapeEntry]:
        """The entries this result depends on, in execution order."""
        return _reachable_entries(self)

    # ---- backward --------------------------------------------------------------
    def backward(self, grad: Any = None) -> None:
        """Replay the tape in reverse, accumulating `.grad` on the leaves.

        `grad` is the upstream gradient (default 1 for a scalar). The tape
        entries used are released afterwards.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of its graph "
                "had requires_grad=True, or it was computed under no_grad()"
            )
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() without a gradient needs a scalar result; got shape {self.shape}"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = as_array(grad, like=self.data, op="backward")
            if tuple(grad.shape) != self.shape:
                raise ValueError(
                    f"backward(grad): grad shape {tuple(grad.shape)} does not match the "
                    f"tensor's shape {self.shape}"
                )
            if grad.dtype != self.dtype:
                grad = grad.astype(self.dtype)
        _run_backward(self, grad)

    # ---- operators and methods: each delegates to the op of the same name --------
    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.sub(self, other)

    def __rsub__(self, other):
        return _ops.sub(other, self)

    def __mul__(self, other):
        return _ops.mul(self, other)

    def __rmul__(self, other):
        return _ops.mul(other, self)

    def __truediv__(self, other):
        return _ops.div(self, other)

    def __rtruediv__(self, other):
        return _ops.div(other, self)

    def __neg__(self):
        return _ops.neg(self)

    def __pow__(self, exponent):
        return _ops.pow(self, exponent)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        return _ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _ops.max(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        return _ops.reshape(self, *shape)

    def transpose(self, *axes):
        return _ops.transpose(self, *axes)

    def permute(self, *axes):
        return _ops.transpose(self, *axes)

    @property
    def T(self):
        return _ops.transpose(self)

    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def tanh(self):
        return _ops.tanh(self)

    def sigmoid(self):
        return _ops.sigmoid(self)

    def relu(self):
        return _ops.relu(self)

    def clip(self, min=None, max=None):  # noqa: A002 - NumPy's keyword names
        return _ops.clip(self, min, max)

    def softmax(self, axis=-1):
        return _ops.softmax(self, axis=axis)

    def log_softmax(self, axis=-1):
        return _ops.log_softmax(self, axis=axis)

    def split(self, indices_or_sections, axis=0):
        return _ops.split(self, indices_or_sections, axis=axis)


def as_array(value: Any, like: Any, op: str) -> Any:
    """Raw array for an op input, on the same backend and float dtype as `like`.

    Python scalars take `like`'s dtype, so they never upcast float32 (beside an integer
    tensor they promote as NumPy 2's Python scalars do). Arrays
    keep their dtype; an array from another backend raises BackendMismatchError.
    """
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, (bool, int, float, np.generic)):
        # NumPy scalars count as scalars too: np.float64(2) must not upcast float32. Beside
        # an integer tensor a Python number is "weak", as in NumPy 2: int32 * 2 stays int32.
        if like.dtype.kind == "f":
            dtype = like.dtype
        elif isinstance(value, np.generic):
            dtype = None
        else:
            dtype = np.result_type(like.dtype, value)
        xp = get_array_module(like)
        if xp is np:
            return np.asarray(value, dtype=dtype)
        return xp.full((), value, dtype=dtype)  # a fill kernel, not a host-to-device copy
    if hasattr(value, "__array__") or hasattr(value, "__cuda_array_interface__"):
        check_same_backend(op, like, value)
        return value
    # A list: NumPy's own promotion (ints + [0.5] are floats), except that Python floats
    # never upcast a float tensor, as scalars do not.
    array = np.asarray(value)
    if like.dtype.kind == "f" and array.dtype.kind in "biuf":
        array = array.astype(like.dtype)
    return get_array_module(like).asarray(array)


def check_same_backend(op: str, *arrays: Any) -> None:
    """Raise BackendMismatchError naming `op` if the arrays live on two backends."""
    names = {
        backend_of(a)
        for a in arrays
        if a is not None and not isinstance(a, (bool, int, float, np.generic))
    }
    if len(names) > 1:
        raise BackendMismatchError(
            f"op {op!r} got arrays from two backends: {sorted(names)}. Move one with "
            f"Tensor.to({sorted(names)[0]!r}) or .to({sorted(names)[1]!r}) first"
        )


def record(op: str, inputs: Sequence[Tensor], out_data: Any, backward_fn: BackwardFn) -> Tensor:
    """Wrap `out_data` as the result of `op` and, if needed, append a tape entry.

    `backward_fn(grad_out)` returns one gradient (or None) per input, each of
    its input's shape. Nothing is recorded under no_grad() or when no input
    requires grad.
    """
    needs_grad = is_grad_enabled() and any(t.requires_grad for t in inputs)
    if not needs_grad:
        return Tensor(out_data)
    return Tensor(out_data, requires_grad=True, _entry=TapeEntry(op, tuple(inputs), backward_fn))


def _reachable_entries(root: Tensor) -> list[TapeEntry]:
    """Entries reachable from `root` through inputs that require grad, by seq."""
    found: dict[int, TapeEntry] = {}
    stack = [root._entry] if root._entry is not None else []
    while stack:
        entry = stack.pop()
        if id(entry) in found:
            continue
        found[id(entry)] = entry
        for t in entry.inputs:
            if t._entry is not None and t.requires_grad and id(t._entry) not in found:
                stack.append(t._entry)
    return sorted(found.values(), key=lambda e: e.seq)


def _released_error(entry: TapeEntry) -> GraphReleasedError:
    return GraphReleasedError(
        f"backward() reached the {entry.op!r} op (tape entry #{entry.seq}), whose graph an "
        "earlier backward() already released. Each graph can be backwarded once. If you "
        "carry a recurrent state across batches, detach() it before the next batch."
    )


def _run_backward(root: Tensor, grad: Any) -> None:
    # The upstream array may be the caller's: a leaf never stores it uncopied.
    handed_out: set[int] = {id(grad)}
    if root._entry is None:  # a leaf: its gradient is the upstream one
        _accumulate_leaf(root, grad, handed_out)
        return
    tape = _reachable_entries(root)
    for entry in tape:
        if entry.released:
            raise _released_error(entry)
    grads: dict[int, Any] = {id(root._entry): grad}
    for entry in reversed(tape):
        g = grads.pop(id(entry), None)
        if g is not None:
            input_grads = entry.backward_fn(g)
            if len(input_grads) != len(entry.inputs):
                raise RuntimeError(
                    f"the backward of op {entry.op!r} returned {len(input_grads)} gradients "
                    f"for {len(entry.inputs)} inputs"
                )
            for t, g_in in zip(entry.inputs, input_grads):
                if g_in is None or not t.requires_grad:
                    continue
                g_in = _checked_grad(entry.op, t, g_in)
                if t._entry is None:
                    _accumulate_leaf(t, g_in, handed_out)
                else:
                    key = id(t._entry)
                    grads[key] = g_in if key not in grads else grads[key] + g_in
        entry.release()


def _checked_grad(op: str, t: Tensor, g: Any) -> Any:
    """An input's gradient, checked for shape and cast to the input's dtype.

    A wrong shape is a bug in the op's backward (a custom op's, say); a dtype
    mismatch comes from mixing dtypes (float32 input, float64 constant), and
    the gradient keeps the dtype of what it is the gradient of.
    """
    if tuple(g.shape) != t.shape:
        raise RuntimeError(
            f"the backward of op {op!r} returned a gradient of shape {tuple(g.shape)} "
            f"for an input of shape {t.shape}"
        )
    if g.dtype != t.dtype:
        g = g.astype(t.dtype)
    return g


def _accumulate_leaf(leaf: Tensor, g: Any, handed_out: set[int]) -> None:
    if leaf.grad is None:
        # Store a private copy when the array is a view or was handed to another
        # leaf already, so in-place updates of one .grad never touch another.
        if getattr(g, "base", None) is not None or id(g) in handed_out:
            g = g.copy()
        handed_out.add(id(g))
        leaf.grad = g
    elif sys.getrefcount(leaf.grad) == 2:
        # Nothing but the leaf references its gradient (no pending entry, no caller
        # holding it): add in place. Two references: the leaf's and the argument's.
        leaf.grad += g
    else:
        # Not in place: the stored array may still be pending for another entry. The
        # sum goes to a recycled array: a tied embedding's gradient is (V, E), big.
        stored = leaf.grad
        leaf.grad = get_array_module(g).add(
            stored, g, out=recycled_empty(get_array_module(g), stored.shape, stored.dtype)
        )


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, backend: str | None = None):
    """Make a Tensor on the default backend (or `backend`).

    NumPy/CuPy arrays keep their dtype (float64 stays float64, int ids stay
    ints); Python scalars and lists become float32 unless `dtype` is given.
    An array already on the target backend, with the asked dtype, is used as is,
    not copied (like `torch.from_numpy`): the Tensor and the array share memory.
    A Tensor argument gives a new leaf over the same data, cut from the graph,
    as `.detach()` does; pass `.data.copy()` for an independent copy.
    """
    if isinstance(data, Tensor):
        data = data.data
    target = get_backend(backend)
    is_array = hasattr(data, "dtype") and hasattr(data, "shape")
    if dtype is None and not is_array:
        dtype = np.float32
    array = target.asarray(data, dtype=dtype)
    if requires_grad and array.dtype.kind != "f":
        raise TypeError(
            f"tensor(requires_grad=True) needs a floating dtype; got {array.dtype}"
        )
    return Tensor(array, requires_grad=requires_grad)


# Imported last: ops builds on Tensor and record above. Tensor's methods look it
# up at call time, so this module can be imported first.
from . import ops as _ops  # noqa: E402
