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
    """Integer ids as a raw array on `like`'s backend."""
    ids = _as_tensor(value, like, op).data
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must hold integers; got dtype {ids.dtype}")
    return ids


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
    if not isinstance(x, Tensor):
        x = _as_tensor(x, weight, "linear")
    check_same_backend("linear", x.data, weight.data)
    out_features, in_features = weight.shape
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(
            f"linear: input's last axis must be in_features={in_features}; got input shape "
            f"{x.shape}"
        )
    if x.dtype != weight.dtype:
        raise TypeError(
            f"linear: input dtype {x.dtype} does not match weight dtype {weight.dtype}; "
            f"cast the input with .astype({str(weight.dtype)!r})"
        )
    xp = get_array_module(x.data)
    lead = x.shape[:-1]
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
        g2 = g.reshape(-1, out_features)  # (M, H)
        gx = gw = gb = None
        if x.requires_grad:
            gx = threads.matmul(xp, g2, w, out=recycled_empty(xp, x2.shape, g.dtype))
            gx = gx.reshape(x.shape)
        if weight.requires_grad:
            gw = threads.matmul(xp, g2.T, x2, out=recycled_empty(xp, w.shape, g.dtype))
        if bias is None:
            return gx, gw
        if bias.requires_grad:
            gb = _column_sums(xp, g2)
        return gx, gw, gb

    inputs = (x, weight) if bias is None else (x, weight, bias)
    return record("linear", inputs, y.reshape(*lead, out_features), backward)


def _column_sums(xp: Any, g2: Any) -> Any:
    """g2.sum(axis=0). Float32 as ones @ g2, a matrix-vector product, faster than the
    ufunc's reduction; a wide one in column blocks over the library's threads."""
    if g2.dtype.itemsize > 4:
        return g2.sum(axis=0)
    ones = xp.ones(g2.shape[0], g2.dtype)
    if xp is not np or not threads.owns_blas():
        return ones @ g2
    sums = np.empty(g2.shape[1], g2.dtype)
    parallel_rows(
        xp,
        g2.shape[1],
        lambda lo, hi: np.matmul(ones, g2[:, lo:hi], out=sums[lo:hi]),
        min_rows=max(1, _PARALLEL_ELEMENTS // g2.shape[0]),
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
    loss = xp.dot(diff, diff) / count

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
    if logits.ndim < 1:
        raise ValueError("softmax_cross_entropy: logits need a class axis; got a 0-d tensor")
    if logits.dtype.kind != "f":
        raise TypeError(f"softmax_cross_entropy: logits must be floating; got {logits.dtype}")
    xp = get_array_module(logits.data)
    targets = _integer_ids(targets, logits, "softmax_cross_entropy", "targets")
    if tuple(targets.shape) != logits.shape[:-1]:
        raise ValueError(
            f"softmax_cross_entropy: targets shape {tuple(targets.shape)} must equal logits "
            f"shape without its last axis, {logits.shape[:-1]}"
        )
    vocab = logits.shape[-1]
    z = logits.data.reshape(-1, vocab)  # (M, V)
    t = targets.reshape(-1)  # (M,)
    rows = z.shape[0]

    valid = t != ignore_index
    count = int(valid.sum())
    all_count = count == rows
    if not all_count:
        t = xp.where(valid, t, 0)  # any class works for an ignored row: it is masked out
    bad = _first_out_of_range(xp, t, 0, vocab)
    if bad is not None:
        raise IndexError(
            f"softmax_cross_entropy: target {bad} is out of range for {vocab} classes "
            f"(expected 0 <= target < {vocab}, or ignore_index={ignore_index})"
        )

    # The buffer is owned by this op, then handed out as the logits' gradient. When a
    # backward will follow, the forward already leaves softmax / count in it (valid rows),
    # scaling each block of rows while it is in cache: backward then only subtracts at
    # the targets, with no pass of its own over (M, V).
    exps = recycled_empty(xp, z.shape, z.dtype)  # (M, V)
    exp_sum = xp.empty(rows, dtype=z.dtype)  # (M,) row sums of the (shifted) exps
    shift = xp.zeros(rows, dtype=z.dtype)  # (M,) what each row was shifted by
    normalise = is_grad_enabled() and logits.requires_grad
    row_weight = valid.astype(z.dtype) / max(count, 1) if normalise else None  # (M,)
    # Rows per block: a block of exps stays in a core's L2 between its passes.
    block = rows if xp is not np else max(1, _BLOCK_BYTES // (vocab * z.dtype.itemsize))

    def exponentiate(start: int, stop: int) -> None:
        for a in range(start, stop, block):
            _softmax_block(
                xp,
                z[a : a + block],
                exps[a : a + block],
                exp_sum[a : a + block],
                shift[a : a + block],
                None if row_weight is None else row_weight[a : a + block],
            )

    parallel_rows(xp, rows, exponentiate, min_rows=max(1, _PARALLEL_ELEMENTS // vocab))
    if z.dtype.itemsize <= 4:
        _redo_shifted(xp, z, exps, exp_sum, shift, row_weight)
    picked = xp.take_along_axis(z, t[:, None], axis=1)[:, 0]  # (M,)
    row_loss = xp.log(exp_sum) - picked + shift  # (M,)
    if not all_count:
        row_loss *= valid
    loss = row_loss.sum() / max(count, 1)

    def backward(g):
        coef = g / max(count, 1)  # 0-d: d loss / d row_loss for a counted row
        if xp is not np or float(g) != 1.0:  # the forward scaled for g == 1
            xp.multiply(exps, g, out=exps)
        index = xp.arange(rows) if all_count else xp.flatnonzero(valid)
        exps[index, t[index]] -= coef  # rows are distinct, so no repeated index
        # Returned as is when no reshape is needed: a view would be copied for a leaf.
        return (exps if exps.shape == logits.shape else exps.reshape(logits.shape),)

    loss = xp.asarray(loss, dtype=logits.dtype)
    return record("softmax_cross_entropy", (logits,), loss, backward)


# A block of exponentiated logits small enough to stay in one core's L2 (2 MiB or more).
_BLOCK_BYTES = 512 * 1024
# Below this many logits a softmax runs on one thread: splitting costs more than it saves.
_PARALLEL_ELEMENTS = 1 << 18


def _softmax_block(xp, z, exps, exp_sum, shift, row_weight) -> None:
    """One block of rows of softmax_cross_entropy's forward, in place.

    exps = exp(z - shift) and exp_sum its row sums; with row_weight (the row's
    weight in the mean loss, 0 for ignored rows) exps becomes softmax * row_weight.
    Float32 skips the max pass (shift stays 0): `_redo_shifted` then mends the rows
    that overflowed or underflowed. Float64, the checking dtype, is always shifted,
    exact even for tiny losses.
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        if z.dtype.itemsize > 4:
            shift[...] = z.max(axis=1)
            xp.subtract(z, shift[:, None], out=exps)
            xp.exp(exps, out=exps)
        else:
            xp.exp(z, out=exps)
        if xp is np:  # one unrolled pass per row, no temporary: faster than ndarray.sum
            np.einsum("ij->i", exps, out=exp_sum)
        else:
            exps.sum(axis=1, out=exp_sum)
        if row_weight is not None:
            exps *= (row_weight / exp_sum)[:, None]


def _redo_shifted(xp, z, exps, exp_sum, shift, row_weight) -> None:
    """Redo, shifted by their max, the rows whose unshifted exps overflowed or underflowed.

    Without the max pass the loss carries an absolute error of about one ulp of the
    logits, as the shifted form does, as long as the row sum is finite and not tiny.
    """
    bad = ~(xp.isfinite(exp_sum) & (exp_sum >= float(np.finfo(z.dtype).tiny) * z.shape[1]))
    if not bool(bad.any()):
        return
    redo = xp.flatnonzero(bad)
    shift[redo] = z[redo].max(axis=1)
    rows = xp.exp(z[redo] - shift[redo, None])
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
