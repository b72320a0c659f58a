"""Fused layer ops, losses and metrics: `tr.nn.functional`.

Each op here is one tape entry with a hand-written backward beside its
forward. Shape letters: N batch, T time, D input features, V vocabulary,
M = the product of the leading axes once flattened.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import threads
from ..backend import backend_of, get_array_module, get_backend, scatter_add
from ..random import default_generator
from ..tensor import Tensor, check_same_backend, is_grad_enabled, no_grad, record
from ..threads import parallel_rows
from ..workspace import POOL, recycled_empty

__all__ = [
    "linear",
    "embedding",
    "dropout",
    "dropout_mask",
    "mse_loss",
    "softmax_cross_entropy",
    "linear_cross_entropy",
    "fuses_linear_cross_entropy",
    "cross_entropy",
    "perplexity",
    "accuracy",
]


def _as_tensor(value: Any, like: Tensor, op: str) -> Tensor:
    """A Tensor on `like`'s backend: Tensors must already be there; raw data is moved."""
    if isinstance(value, Tensor):
        check_same_backend(op, like.data, value.data)
        return value
    return Tensor(get_backend(like.backend).asarray(value))


def _integer_ids(value: Any, like: Tensor, op: str, name: str) -> Any:
    """Integer ids as a raw array on `like`'s backend, a copy of the caller's: backward
    reads them later, after a caller may have refilled its array (ids are small)."""
    ids = _as_tensor(value, like, op).data
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must hold integers; got dtype {ids.dtype}")
    return ids.copy()


def _first_out_of_range(xp: Any, ids: Any, low: int, high: int) -> int | None:
    """The first id outside [low, high), or None (one host sync on CuPy)."""
    bad = (ids < low) | (ids >= high)
    if not bool(bad.any()):
        return None
    return int(ids.reshape(-1)[int(xp.argmax(bad.reshape(-1)))])


# ---- linear -------------------------------------------------------------------
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x @ weight.T + bias as one op, for x of any leading shape.

    x (..., D), weight (H, D), bias (H,) or None -> y (..., H). The leading
    axes are flattened to M rows so forward and backward are single matmuls.
    """
    x = _linear_input(x, weight, "linear", bias)
    xp = get_array_module(x.data)
    lead = x.shape[:-1]
    out_features, in_features = weight.shape
    x2 = x.data.reshape(-1, in_features)  # (M, D)
    w = weight.data  # (H, D)
    M, D, H = x2.shape[0], in_features, out_features
    # Outputs and gradients come from the recycler: on a word-LM head they are
    # (M, V) and (V, D) arrays, and fresh memory would cost a page fault per 4 KiB.
    y = recycled_empty(xp, (M, H), x.dtype)
    if bias is not None and _folds_bias(M, D, H):
        # [x | 1] @ [W | b].T: the bias rides in the matmul instead of a pass over the
        # (M, H) output. (Its gradient stays a column sum: the same trick backward
        # makes the weight-gradient matmul slower than the sum it saves.)
        ws = POOL.take(("linear", M, D, H, x.dtype.str), xp)
        x_aug = ws.empty("x", (M, D + 1), x.dtype)
        x_aug[:, :D] = x2
        x_aug[:, D] = 1
        w_aug = ws.empty("w", (H, D + 1), x.dtype)
        w_aug[:, :D] = w
        w_aug[:, D] = bias.data
        threads.matmul(xp, x_aug, w_aug.T, out=y)
        POOL.give_back(ws)
    else:
        threads.matmul(xp, x2, w.T, out=y)
        if bias is not None:
            y += bias.data

    def backward(g):
        return _linear_grads(xp, g.reshape(-1, out_features), x, x2, weight, bias)

    inputs = (x, weight) if bias is None else (x, weight, bias)
    return record("linear", inputs, y.reshape(*lead, out_features), backward)


def _linear_input(x: Any, weight: Tensor, op: str, bias: Tensor | None = None) -> Tensor:
    """x as a Tensor that `weight` (out_features, in_features) can multiply, with a
    `bias` of (out_features,), or a clear error naming what does not fit."""
    if weight.ndim != 2:
        raise ValueError(
            f"{op}: weight must be (out_features, in_features); got shape {weight.shape}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"{op}: bias shape {tuple(bias.shape)} must be (out_features,) = "
            f"({weight.shape[0]},)"
        )
    if not isinstance(x, Tensor):
        x = _as_tensor(x, weight, op)
    check_same_backend(op, x.data, weight.data)
    in_features = weight.shape[1]
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(
            f"{op}: input's last axis must be in_features={in_features}; got input shape "
            f"{x.shape}"
        )
    if x.dtype != weight.dtype:
        raise TypeError(
            f"{op}: input dtype {x.dtype} does not match weight dtype {weight.dtype}; "
            f"cast the input with .astype({str(weight.dtype)!r})"
        )
    return x


def _linear_grads(
    xp: Any,
    g2: Any,
    x: Tensor,
    x2: Any,
    weight: Tensor,
    bias: Tensor | None,
    row_scale: Any = None,
):
    """Gradients of y = x @ W.T + b from dL/dy as (M, H) rows: (gx, gW[, gb]), None
    where an input needs none. dL/dy is g2, or row_scale[:, None] * g2 when a row scale
    (M,) is given: it is then applied to the (M, D) operands and results, never to g2."""
    gx = gw = gb = None
    if x.requires_grad:
        gx = threads.matmul(xp, g2, weight.data, out=recycled_empty(xp, x2.shape, g2.dtype))
        if row_scale is not None:
            gx *= row_scale[:, None]
        gx = gx.reshape(x.shape)
    if weight.requires_grad:
        scaled_x = x2 if row_scale is None else x2 * row_scale[:, None]
        gw = threads.matmul(xp, g2.T, scaled_x, out=recycled_empty(xp, weight.shape, g2.dtype))
    if bias is None:
        return gx, gw
    if bias.requires_grad:
        gb = _column_sums(xp, g2, row_scale)
    return gx, gw, gb


def _column_sums(xp: Any, g2: Any, row_weight: Any = None) -> Any:
    """g2.sum(axis=0), or row_weight @ g2. Float32 as a matrix-vector product, faster than
    the ufunc's reduction; a wide one in column blocks over the library's threads."""
    if g2.dtype.itemsize > 4 and row_weight is None:
        return g2.sum(axis=0)
    weights = xp.ones(g2.shape[0], g2.dtype) if row_weight is None else row_weight
    if xp is not np or not threads.owns_blas():
        return weights @ g2
    sums = np.empty(g2.shape[1], g2.dtype)
    parallel_rows(
        xp,
        g2.shape[1],
        lambda lo, hi: np.matmul(weights, g2[:, lo:hi], out=sums[lo:hi]),
        min_rows=max(1, threads.PARALLEL_ELEMENTS // g2.shape[0]),
    )
    return sums


def _folds_bias(rows: int, in_features: int, out_features: int) -> bool:
    """Whether [x | 1] @ [W | b].T beats x @ W.T + b: when the output is big (a pass
    over it costs) and the two copies that build [x | 1] and [W | b] are small next to it."""
    output = rows * out_features
    return output >= 1 << 20 and output >= 4 * (rows + out_features) * (in_features + 1)


# ---- embedding ----------------------------------------------------------------
def embedding(ids: Any, weight: Tensor) -> Tensor:
    """Rows of `weight` (V, D) picked by integer `ids` of any shape -> (..., D).

    Raw id arrays move to the weight's backend; an id outside [0, V) raises
    IndexError naming it. Repeated ids sum their gradients.
    """
    xp = get_array_module(weight.data)
    ids = _integer_ids(ids, weight, "embedding", "ids")
    num_embeddings, embedding_dim = weight.shape
    bad = _first_out_of_range(xp, ids, 0, num_embeddings)
    if bad is not None:
        raise IndexError(
            f"embedding: id {bad} is out of range for num_embeddings={num_embeddings} "
            f"(expected 0 <= id < {num_embeddings})"
        )
    flat_ids = ids.reshape(-1)  # (M,)
    y = xp.take(weight.data, flat_ids, axis=0)  # (M, D)

    def backward(g):
        gw = xp.zeros(weight.shape, dtype=g.dtype)
        g2 = g.reshape(-1, embedding_dim)  # (M, D)
        if xp is np and flat_ids.size:
            # NumPy's unbuffered add.at is slow: sort the ids once and sum each run
            # of equal ids with one reduceat, then write each distinct row once.
            order = np.argsort(flat_ids, kind="stable")
            sorted_ids = flat_ids[order]
            starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
            gw[sorted_ids[starts]] = np.add.reduceat(g2[order], starts, axis=0)
        else:
            scatter_add(xp, gw, flat_ids, g2)
        return (gw,)

    return record("embedding", (weight,), y.reshape(*ids.shape, embedding_dim), backward)


# ---- dropout ------------------------------------------------------------------
def dropout_mask(
    shape: tuple[int, ...],
    p: float,
    dtype: Any = np.float32,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """A host mask of 0 and 1/(1-p): each element kept with probability 1-p."""
    rng = default_generator() if generator is None else generator
    keep = rng.random(shape, dtype=np.float32) >= p
    mask = keep.astype(dtype)
    mask *= 1.0 / (1.0 - p)
    return mask


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"dropout: p must be a number in [0, 1); got {p!r}")
    return float(p)


def dropout(
    x: Tensor,
    p: float,
    training: bool = True,
    generator: np.random.Generator | None = None,
    mask: Any = None,
) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    Returns `x` itself when not training or p == 0. The mask is drawn on the
    host (from `generator`, default the library's) and moved to x's backend;
    pass `mask` (same shape as x) to reuse a fixed one.
    """
    p = _check_p(p)
    if not training or (p == 0 and mask is None):
        return x
    if mask is None:
        mask = dropout_mask(x.shape, p, x.dtype, generator)
    mask = _as_tensor(mask, x, "dropout").data
    if tuple(mask.shape) != x.shape:
        raise ValueError(f"dropout: mask shape {tuple(mask.shape)} != input shape {x.shape}")
    return record("dropout", (x,), x.data * mask, lambda g: (g * mask,))


# ---- losses -------------------------------------------------------------------
def mse_loss(pred: Tensor, target: Any) -> Tensor:
    """Mean squared error, mean over all elements; pred and target of equal shape."""
    target = _as_tensor(target, pred, "mse_loss")
    if target.dtype != pred.dtype:
        if target.requires_grad:
            raise TypeError(
                f"mse_loss: target dtype {target.dtype} does not match pred dtype {pred.dtype}"
            )
        target = Tensor(target.data.astype(pred.dtype))
    if pred.shape != target.shape:
        raise ValueError(
            f"mse_loss: target shape {target.shape} must equal pred shape {pred.shape}"
        )
    xp = get_array_module(pred.data)
    diff = (pred.data - target.data).reshape(-1)
    count = max(diff.size, 1)
    # Summed in float32 at least: float16 squares of 3 overflow after 7,282 of them.
    wide = diff if diff.dtype.itemsize >= 4 else diff.astype(xp.float32)
    loss = xp.dot(wide, wide) / count

    def backward(g):
        g_pred = diff * (2 * g / count)
        g_pred = g_pred.reshape(pred.shape)
        return g_pred, (-g_pred if target.requires_grad else None)

    return record("mse_loss", (pred, target), xp.asarray(loss, dtype=pred.dtype), backward)


def softmax_cross_entropy(logits: Tensor, targets: Any, ignore_index: int = -1) -> Tensor:
    """Mean cross-entropy of softmax(logits) against integer targets, as one op.

    logits (..., V), targets (...) integers in [0, V) or `ignore_index`. The
    mean is over the targets that count (those != ignore_index); with none
    counting the loss is 0 and so is the gradient. Numerically stable
    (max-subtracted log-sum-exp).

    Lean on purpose, as it dominates a word-LM step: forward makes one (M, V)
    buffer (the exponentiated logits) and backward turns that same buffer into
    the logits' gradient, (softmax - onehot) / count. So the result can be
    backwarded once, which is all the tape allows anyway.
    """
    if not isinstance(logits, Tensor):  # raw logits: a constant on their own backend
        logits = Tensor(get_array_module(logits).asarray(logits) if hasattr(logits, "dtype")
                        else np.asarray(logits, dtype=np.float32))  # fmt: skip
    if logits.ndim < 1:
        raise ValueError("softmax_cross_entropy: logits need a class axis; got a 0-d tensor")
    if logits.dtype.kind != "f":
        raise TypeError(f"softmax_cross_entropy: logits must be floating; got {logits.dtype}")
    xp = get_array_module(logits.data)
    vocab = logits.shape[-1]
    z = logits.data.reshape(-1, vocab)  # (M, V)
    targets = _class_targets(xp, targets, logits, logits.shape, "softmax_cross_entropy",
                             ignore_index)  # fmt: skip
    normalise = is_grad_enabled() and logits.requires_grad
    # The buffer is owned by this op, then handed out as the logits' gradient. When a
    # backward will follow, the forward already leaves softmax / count in it (valid rows),
    # scaling each block of rows while it is in cache: backward then only subtracts at
    # the targets, with no pass of its own over (M, V).
    soft = _SoftmaxRows(xp, z.shape, z.dtype, targets, normalise)

    def exponentiate(start: int, stop: int) -> None:
        soft.rows(start, stop, lambda a, b: z[a:b])

    parallel_rows(xp, soft.count_rows, exponentiate, min_rows=soft.min_rows)
    picked = xp.take_along_axis(z, targets.ids[:, None], axis=1)[:, 0]  # (M,)
    loss = soft.finish(lambda rows: z[rows], picked)

    def backward(g):
        exps = soft.gradient(g)
        # Returned as is when no reshape is needed: a view would be copied for a leaf.
        return (exps if exps.shape == logits.shape else exps.reshape(logits.shape),)

    return record("softmax_cross_entropy", (logits,), loss, backward)


def linear_cross_entropy(
    x: Tensor, weight: Tensor, bias: Tensor | None, targets: Any, ignore_index: int = -1
) -> Tensor:
    """softmax_cross_entropy(linear(x, weight, bias), targets, ignore_index), as one op.

    For a classifier head whose logits only the loss needs, such as a word LM's
    decoder: the same value and gradients, but on NumPy in float32 with a
    backward to come, the (M, V) logits never exist on their own. Each thread
    computes its rows' logits and exponentiates them, and sums each row, while
    they are still in its cache, in the one buffer that backward then hands to
    the two gradient matmuls. The logits come out of the matmul in base-2 units
    (x is scaled by log2 e, a few thousand multiplies), so `exp2`, about twice
    as fast as `exp` here, does the exponentials; the bias is added in cache
    rather than folded into a copied weight. The buffer is never scaled to the
    softmax: each row's 1 / sum goes into the (M, D) operands of the backward
    matmuls instead. Anywhere else it is the two ops composed.
    """
    x = _linear_input(x, weight, "linear_cross_entropy", bias)
    if not fuses_linear_cross_entropy(x, weight, bias):
        return softmax_cross_entropy(linear(x, weight, bias), targets, ignore_index)
    xp, dtype = np, x.dtype
    vocab, features = weight.shape
    x2 = x.data.reshape(-1, features)  # (M, D)
    w, b = weight.data, None if bias is None else bias.data
    targets = _class_targets(xp, targets, x, (*x.shape[:-1], vocab), "linear_cross_entropy",
                             ignore_index)  # fmt: skip
    # Plain exps, not scaled to softmax: backward folds each row's scale into the (M, D)
    # operands of its matmuls instead of a pass over (M, V).
    soft = _SoftmaxRows(xp, (x2.shape[0], vocab), dtype, targets, normalise=False)
    x_base2 = x2 * dtype.type(_LOG2_E)  # (M, D): logits in base-2 units
    b_base2 = None if b is None else b * dtype.type(_LOG2_E)

    def logits_base2(a: int, stop: int) -> Any:
        block = soft.exps[a:stop]
        if b_base2 is not None:
            block += b_base2
        return block

    if threads.owns_blas():  # each thread: its rows' matmul, then their exps
        def exponentiate(start: int, stop: int) -> None:
            np.matmul(x_base2[start:stop], w.T, out=soft.exps[start:stop])  # one BLAS call
            soft.rows(start, stop, logits_base2, base2=True)
    else:  # BLAS's own threads do the matmul whole
        threads.matmul(xp, x_base2, w.T, out=soft.exps)

        def exponentiate(start: int, stop: int) -> None:
            soft.rows(start, stop, logits_base2, base2=True)

    parallel_rows(xp, soft.count_rows, exponentiate, min_rows=soft.min_rows)

    def natural_logits(rows: Any) -> Any:  # only for the few rows redone shifted
        z = x2[rows] @ w.T
        return z if b is None else z + b

    ids = targets.ids
    picked = np.einsum("ij,ij->i", x2, w[ids])  # (M,): the target's logit, natural units
    if b is not None:
        picked += b[ids]
    loss = soft.finish(natural_logits, picked)

    def backward(g):
        exps, row_scale = soft.unscaled_gradient(g)
        return _linear_grads(xp, exps, x, x2, weight, bias, row_scale)

    inputs = (x, weight) if bias is None else (x, weight, bias)
    return record("linear_cross_entropy", inputs, loss, backward)


_LOG2_E = 1.4426950408889634  # log2(e): e**z == 2**(z * log2(e))


def fuses_linear_cross_entropy(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> bool:
    """Whether `linear_cross_entropy(x, weight, bias, ...)` runs as the fused op, whose
    logits never exist: NumPy, float32, and a backward to come (grad enabled and an input
    that needs it). Otherwise it is `linear` then `softmax_cross_entropy`."""
    needs_grad = is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    return needs_grad and get_array_module(x.data) is np and x.dtype == np.float32


class _Targets:
    """Class ids checked against V, flattened to (M,), and which of them count."""

    def __init__(self, ids: Any, valid: Any, count: int):
        self.ids, self.valid, self.count = ids, valid, count
        self.all_count = count == ids.shape[0]


def _class_targets(
    xp: Any, targets: Any, like: Tensor, logits_shape: tuple[int, ...], op: str, ignore_index: int
) -> _Targets:
    """`targets` for logits of shape (..., V) on `like`'s backend, or a clear error
    naming the bad shape or id."""
    ids = _integer_ids(targets, like, op, "targets")
    if tuple(ids.shape) != tuple(logits_shape[:-1]):
        raise ValueError(
            f"{op}: targets shape {tuple(ids.shape)} must equal logits shape without its last "
            f"axis, {tuple(logits_shape[:-1])}"
        )
    vocab = logits_shape[-1]
    t = ids.reshape(-1)  # (M,)
    valid = t != ignore_index
    count = int(valid.sum())
    if count != t.shape[0]:
        t = xp.where(valid, t, 0)  # any class works for an ignored row: it is masked out
    bad = _first_out_of_range(xp, t, 0, vocab)
    if bad is not None:
        raise IndexError(
            f"{op}: target {bad} is out of range for {vocab} classes "
            f"(expected 0 <= target < {vocab}, or ignore_index={ignore_index})"
        )
    return _Targets(t, valid, count)


class _SoftmaxRows:
    """The (M, V) buffer of a softmax cross-entropy and what its rows need.

    `rows` fills a range of rows block by block (exp, row sums and, when a
    backward will follow, the scale to softmax * row weight); `finish` mends the
    rows that overflowed and returns the mean loss; `gradient` turns the buffer
    into the logits' gradient.
    """

    def __init__(self, xp: Any, shape: tuple[int, int], dtype: Any, targets: _Targets,
                 normalise: bool):  # fmt: skip
        rows, vocab = shape
        self.xp, self.targets, self.count_rows = xp, targets, rows
        self.exps = recycled_empty(xp, shape, dtype)  # (M, V)
        self.exp_sum = xp.empty(rows, dtype=dtype)  # (M,) row sums of the (shifted) exps
        self.shift = xp.zeros(rows, dtype=dtype)  # (M,) what each row was shifted by
        weight = targets.valid.astype(dtype) / max(targets.count, 1) if normalise else None
        self.row_weight = weight  # (M,): the row's weight in the mean loss
        # Rows per block: a block of exps stays in a core's L2 between its passes.
        row_bytes = vocab * np.dtype(dtype).itemsize
        self.block = rows if xp is not np else max(1, _BLOCK_BYTES // row_bytes)
        self.min_rows = max(1, threads.PARALLEL_ELEMENTS // vocab)

    def rows(self, start: int, stop: int, logits_of, base2: bool = False) -> None:
        """Fill rows [start, stop); `logits_of(a, b)` gives rows a..b of the logits
        (base-2 units with `base2`), possibly as a view into the buffer itself."""
        weight = self.row_weight
        for a in range(start, stop, self.block):
            b = min(a + self.block, stop)
            _softmax_block(
                self.xp,
                logits_of(a, b),
                self.exps[a:b],
                self.exp_sum[a:b],
                self.shift[a:b],
                None if weight is None else weight[a:b],
                base2,
            )

    def finish(self, natural_logits, picked: Any) -> Any:
        """The mean loss (0-d array), once every row is filled. `natural_logits(rows)`
        gives those rows' logits for the few redone with a shift; `picked` (M,) is each
        row's target logit."""
        xp, targets = self.xp, self.targets
        if _skips_max_pass(self.exps.dtype):
            _redo_shifted(xp, natural_logits, self.exps, self.exp_sum, self.shift,
                          self.row_weight)  # fmt: skip
        # picked - shift first: exact when the two are close (a shifted row's target
        # logit and its max), so a float16 loss keeps its digits beside logits of -40.
        row_loss = xp.log(self.exp_sum) - (picked - self.shift)  # (M,)
        if not targets.all_count:  # an ignored row adds 0, even where its stand-in is -inf
            row_loss = xp.where(targets.valid, row_loss, 0)
        loss = row_loss.sum() / max(targets.count, 1)
        return xp.asarray(loss, dtype=self.exps.dtype)

    def unscaled_gradient(self, g: Any) -> tuple[Any, Any]:
        """(buffer, row_scale) with d loss / d logits = row_scale[:, None] * buffer, for a
        forward that left the plain exps (normalise=False): the buffer only loses each
        counted row's exp sum at its target, and row_scale is g * weight / exp sum."""
        xp, targets, exps = self.xp, self.targets, self.exps
        index = xp.arange(self.count_rows) if targets.all_count else xp.flatnonzero(targets.valid)
        exps[index, targets.ids[index]] -= self.exp_sum[index]
        weight = targets.valid.astype(exps.dtype) * (g / max(targets.count, 1))
        return exps, (weight / self.exp_sum).astype(exps.dtype)

    def gradient(self, g: Any) -> Any:
        """The buffer, turned into d loss / d logits for an upstream gradient g."""
        xp, targets, exps = self.xp, self.targets, self.exps
        coef = g / max(targets.count, 1)  # 0-d: d loss / d row_loss for a counted row
        if xp is not np or float(g) != 1.0:  # the forward scaled for g == 1
            xp.multiply(exps, g, out=exps)
        index = xp.arange(self.count_rows) if targets.all_count else xp.flatnonzero(targets.valid)
        exps[index, targets.ids[index]] -= coef  # rows are distinct, so no repeated index
        return exps


# A block of exponentiated logits small enough to stay in one core's L2 (2 MiB or more).
_BLOCK_BYTES = 512 * 1024


def _skips_max_pass(dtype: Any) -> bool:
    """Float32 exponentiates unshifted (`_redo_shifted` mends the few rows that leave its
    range); float64, the checking dtype, and float16, whose range is too small, shift."""
    return np.dtype(dtype).itemsize == 4


def _softmax_block(xp, z, exps, exp_sum, shift, row_weight, base2: bool = False) -> None:
    """One block of rows of a softmax cross-entropy's forward, in place (z may be exps).

    exps = exp(z - shift) and exp_sum its row sums (with `base2`, z is in base-2
    units and exps = 2**z); with row_weight (the row's weight in the mean loss,
    0 for ignored rows) exps becomes softmax * row_weight. Float32 skips the max
    pass (shift stays 0): `_redo_shifted` then mends the rows that overflowed or
    underflowed. Float64, the checking dtype, is always shifted, exact even for
    tiny losses; so is float16, whose range is too small to go without.
    """
    # The shift is in the logits' units, which `finish` takes as natural: base-2 logits
    # (float32 only, the fused head) are never shifted here.
    assert not (base2 and not _skips_max_pass(z.dtype)), "base-2 logits are a float32 path"
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        if not _skips_max_pass(z.dtype):
            shift[...] = z.max(axis=1)
            xp.subtract(z, shift[:, None], out=exps)
            xp.exp(exps, out=exps)
        else:
            (xp.exp2 if base2 else xp.exp)(z, out=exps)
        if xp is np:  # one unrolled pass per row, no temporary: faster than ndarray.sum
            np.einsum("ij->i", exps, out=exp_sum)
        else:
            exps.sum(axis=1, out=exp_sum)
        if row_weight is not None:
            exps *= (row_weight / exp_sum)[:, None]


_SUM_LOW, _SUM_HIGH = 2.0**-64, 2.0**64


def _redo_shifted(xp, natural_logits, exps, exp_sum, shift, row_weight) -> None:
    """Redo, shifted by their max, the rows whose unshifted row sum left [2**-64, 2**64]
    (or overflowed); `natural_logits(rows)` gives those rows' logits.

    Without the max pass the loss carries an absolute error of about one ulp of the
    logits, as the shifted form does, as long as the row sum is finite and not tiny.
    """
    # Kept unshifted only while the row sum stays within 2**+-64: then no exp is near
    # overflow (the backward's exps @ W stays finite) and the row's scale, weight / sum,
    # stays a normal float (a subnormal one keeps only a few bits of the gradient).
    bad = ~(xp.isfinite(exp_sum) & (exp_sum >= _SUM_LOW) & (exp_sum <= _SUM_HIGH))
    if not bool(bad.any()):
        return
    redo = xp.flatnonzero(bad)
    z = natural_logits(redo)
    shift[redo] = z.max(axis=1)
    rows = xp.exp(z - shift[redo, None])
    exp_sum[redo] = rows.sum(axis=1)
    if row_weight is not None:
        rows *= (row_weight[redo] / exp_sum[redo])[:, None]
    exps[redo] = rows


cross_entropy = softmax_cross_entropy


# ---- metrics ------------------------------------------------------------------
def perplexity(loss_or_logits: Any, targets: Any = None, ignore_index: int = -1) -> float:
    """exp(mean cross-entropy in nats), as a Python float (inf on overflow).

    `perplexity(mean_ce)` takes a mean cross-entropy (float or 0-d Tensor);
    `perplexity(logits, targets)` computes it first with softmax_cross_entropy.
    """
    if targets is None:
        value = loss_or_logits.item() if isinstance(loss_or_logits, Tensor) else loss_or_logits
        mean_ce = float(value)
    else:
        with no_grad():
            mean_ce = softmax_cross_entropy(loss_or_logits, targets, ignore_index).item()
    try:
        return math.exp(mean_ce)
    except OverflowError:
        return math.inf


def accuracy(logits_or_pred_ids: Any, targets: Any, ignore_index: int | None = None) -> float:
    """Fraction of positions where the prediction equals the target, as a float.

    Accepts logits (..., V) (predictions are their argmax) or integer predicted
    ids (...), with targets (...). Positions whose target is `ignore_index`
    don't count; NaN when nothing counts.
    """
    pred = logits_or_pred_ids
    if not isinstance(pred, Tensor):
        pred = Tensor(get_backend(backend_of(pred)).asarray(pred))
    target = _as_tensor(targets, pred, "accuracy").data
    pred = pred.data
    if pred.dtype.kind == "f":
        if pred.shape[:-1] != target.shape:
            raise ValueError(
                f"accuracy: logits shape {pred.shape} needs targets of shape {pred.shape[:-1]}; "
                f"got {target.shape}"
            )
        pred = pred.argmax(axis=-1)
    elif pred.shape != target.shape:
        raise ValueError(
            f"accuracy: predicted ids shape {pred.shape} must equal targets shape {target.shape}"
        )
    hit = pred == target
    if ignore_index is None:
        counted = hit.size
        correct = int(hit.sum())
    else:
        keep = target != ignore_index
        counted = int(keep.sum())
        correct = int((hit & keep).sum())
    return correct / counted if counted else math.nan
