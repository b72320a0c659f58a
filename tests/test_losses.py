"""Losses and metrics: softmax_cross_entropy, mse_loss, perplexity, accuracy.

Values and gradients are checked against float64 finite differences and,
where torch is installed, against torch.nn.functional.
"""

import math
import re

import numpy as np
import pytest
from conftest import to_host
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.tensor import GraphReleasedError
from tinygrad_rnn.testing import gradcheck


def host(a):
    """A NumPy copy of a Tensor or a raw NumPy/CuPy array (such as `.grad`)."""
    return to_host(a if isinstance(a, tr.Tensor) else tr.Tensor(a))


def _case(seed, lead, vocab, ignore_fraction=0.0, ignore_index=-1):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((*lead, vocab)) * 3
    targets = rng.integers(0, vocab, size=lead)
    ignored = rng.random(lead) < ignore_fraction
    targets[ignored] = ignore_index
    return logits, targets


# ---- softmax_cross_entropy ----------------------------------------------------
@settings(deadline=None)
@given(
    lead=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    vocab=st.integers(1, 6),
    ignore_fraction=st.sampled_from([0.0, 0.4]),
    ignore_index=st.sampled_from([-1, -100, 0]),
    seed=st.integers(0, 1000),
)
def test_cross_entropy_matches_torch_with_ignore_index(
    lead, vocab, ignore_fraction, ignore_index, seed
):
    torch = pytest.importorskip("torch")
    logits, targets = _case(seed, lead, vocab, ignore_fraction, ignore_index)
    counted = targets != ignore_index
    x = tr.tensor(logits, requires_grad=True)
    loss = F.softmax_cross_entropy(x, targets, ignore_index=ignore_index)
    loss.backward()

    tx = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(
        tx.reshape(-1, vocab), torch.tensor(targets).reshape(-1), ignore_index=ignore_index
    )
    if not counted.any():  # torch gives NaN here; we define the loss and gradient as 0
        assert loss.item() == 0 and not host(x.grad).any()
        return
    tloss.backward()
    # A loss near 0 is a difference of terms the size of the logits (log-sum-exp minus the
    # target's logit): its error is a few float64 ulps of those terms, not of the loss.
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-12, atol=5e-14)
    np.testing.assert_allclose(host(x.grad), tx.grad.numpy(), rtol=1e-9, atol=1e-14)


@settings(deadline=None, max_examples=10)
@given(lead=st.lists(st.integers(1, 3), min_size=1, max_size=2), vocab=st.integers(2, 4))
def test_cross_entropy_gradient_matches_finite_differences(lead, vocab):
    logits, targets = _case(1, lead, vocab, ignore_fraction=0.3)
    if (targets == -1).all():
        targets.flat[0] = 0
    assert gradcheck(lambda z: F.softmax_cross_entropy(z, targets), [logits])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_big_enough_to_split_matches_torch(threads, dtype):
    """(64 x 9000) logits are split over row blocks and threads; rows with huge logits
    (redone shifted in float32), ignored rows and an upstream gradient of 3 included."""
    torch = pytest.importorskip("torch")
    from tinygrad_rnn import threads as tr_threads

    logits, targets = _case(7, (64,), 9000, ignore_fraction=0.2)
    logits = logits.astype(dtype)
    logits[5] *= 40  # float32 exp overflows without the shift
    logits[40] -= 200  # ... and underflows here
    before = tr_threads.get_num_threads()
    tr_threads.set_num_threads(threads, blas=False)
    try:
        x = tr.tensor(logits, requires_grad=True)
        loss = F.softmax_cross_entropy(x, targets)
        (loss * 3).backward()
    finally:
        tr_threads.set_num_threads(before, blas=False)
    tx = torch.tensor(logits.astype(np.float64), requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(targets), ignore_index=-1)
    (tloss * 3).backward()
    tight = dtype == np.float64
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-12 if tight else 2e-5)
    np.testing.assert_allclose(
        host(x.grad), tx.grad.numpy(), rtol=1e-9 if tight else 1e-4, atol=1e-15 if tight else 1e-9
    )
    assert host(x.grad).dtype == dtype


def test_cross_entropy_without_grad_leaves_the_loss_unchanged():
    """Under no_grad the forward skips the softmax scaling: the loss must not change."""
    logits, targets = _case(3, (32,), 9000, ignore_fraction=0.1)
    logits = logits.astype(np.float32)
    with_tape = F.softmax_cross_entropy(tr.tensor(logits, requires_grad=True), targets).item()
    with tr.no_grad():
        without = F.softmax_cross_entropy(tr.tensor(logits, requires_grad=True), targets).item()
    assert with_tape == without


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [-5e3, 5e3, 5e3]], np.float32)
    x = tr.tensor(logits, requires_grad=True)
    loss = F.softmax_cross_entropy(x, np.array([1, 2]))
    loss.backward()
    # Row 0: target 1 is 1e4 below the max; row 1: two tied maxima, log 2.
    np.testing.assert_allclose(loss.item(), (1e4 + math.log(2)) / 2, rtol=1e-6)
    assert np.isfinite(host(x.grad)).all()


@pytest.mark.parametrize("fused", [False, True], ids=["cross_entropy", "fused_head"])
@pytest.mark.parametrize("top", [85.0, 88.5])
def test_float32_logits_near_overflow_keep_finite_exact_gradients(fused, top):
    """Rows whose unshifted exp sum nears float32's limit are redone shifted: the fused
    backward's exps @ W overflowed to inf, and a subnormal row scale kept a few bits."""
    torch = pytest.importorskip("torch")
    rows = 4000
    x = np.tile(np.float32([[1.0, 1.0, 1.0]]), (rows, 1))
    w = np.array([[top / 3] * 3, [(top - 2.5) / 3] * 3, [(top - 8.5) / 3] * 3], np.float32)
    targets = np.zeros(rows, dtype=np.int64)
    theirs_x = torch.tensor(x, requires_grad=True)
    theirs_w = torch.tensor(w, requires_grad=True)
    torch.nn.functional.cross_entropy(theirs_x @ theirs_w.T, torch.tensor(targets)).backward()
    ours_x = tr.tensor(x, requires_grad=True)
    ours_w = tr.tensor(w, requires_grad=True)
    if fused:
        F.linear_cross_entropy(ours_x, ours_w, None, targets).backward()
    else:
        F.softmax_cross_entropy(F.linear(ours_x, ours_w), targets).backward()
    for ours, theirs in ((ours_x, theirs_x), (ours_w, theirs_w)):
        assert np.isfinite(host(ours.grad)).all()
        np.testing.assert_allclose(host(ours.grad), theirs.grad.numpy(), rtol=2e-4, atol=1e-12)


def test_an_ignored_row_adds_nothing_even_where_its_stand_in_class_is_minus_inf():
    logits = np.array([[-np.inf, 1, 2], [-np.inf, 0.5, 0.1]], np.float32)
    loss = F.softmax_cross_entropy(tr.tensor(logits, requires_grad=True), np.array([2, -1]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_raw_logits_are_taken_as_constants():
    logits = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    targets = np.array([0, 1, 2, 3])
    expected = F.softmax_cross_entropy(tr.tensor(logits), targets).item()
    assert F.softmax_cross_entropy(logits, targets).item() == expected
    assert F.perplexity(logits, targets) == pytest.approx(math.exp(expected))


def test_cross_entropy_is_one_tape_entry_backwarded_once():
    logits, targets = _case(0, (2, 3), 5)
    x = tr.tensor(logits, requires_grad=True)
    loss = F.softmax_cross_entropy(x, targets)
    assert [entry.op for entry in loss.tape()] == ["softmax_cross_entropy"]
    assert loss.shape == () and loss.dtype == np.float64
    loss.backward()
    with pytest.raises(GraphReleasedError):
        loss.backward()


def test_cross_entropy_keeps_float32_and_needs_no_tape_under_no_grad():
    logits, targets = _case(0, (4,), 3)
    x = tr.tensor(logits.astype(np.float32), requires_grad=True)
    assert F.softmax_cross_entropy(x, targets).dtype == np.float32
    with tr.no_grad():
        loss = F.softmax_cross_entropy(x, targets)
    assert not loss.requires_grad and loss.tape() == []
    assert F.cross_entropy is F.softmax_cross_entropy


def test_cross_entropy_with_every_target_ignored_is_zero():
    x = tr.tensor(np.ones((2, 3)), requires_grad=True)
    loss = F.softmax_cross_entropy(x, np.array([-1, -1]))
    loss.backward()
    assert loss.item() == 0.0 and not host(x.grad).any()


def test_cross_entropy_reports_bad_targets():
    x = tr.tensor(np.zeros((2, 4)), requires_grad=True)
    with pytest.raises(IndexError, match="target 4 .*4 classes"):
        F.softmax_cross_entropy(x, np.array([0, 4]))
    with pytest.raises(IndexError, match="target -2"):
        F.softmax_cross_entropy(x, np.array([-2, 0]))
    with pytest.raises(ValueError, match=r"targets shape \(3,\).*\(2,\)"):
        F.softmax_cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integers"):
        F.softmax_cross_entropy(x, np.array([0.0, 1.0]))


# ---- linear_cross_entropy -----------------------------------------------------
def _head_case(seed, rows, features, vocab, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features))
    weight = rng.standard_normal((vocab, features)) * 0.5
    bias = rng.standard_normal(vocab)
    targets = rng.integers(0, vocab, rows)
    targets[rng.random(rows) < ignore_fraction] = -1
    return x, weight, bias, targets


def _head_grads(op, x, weight, bias, targets, scale=3.0, dtype=np.float32):
    """loss and the gradients of (scale * loss) for x, weight and bias (or None)."""
    tx = tr.tensor(x.astype(dtype), requires_grad=True)
    tw = tr.tensor(weight.astype(dtype), requires_grad=True)
    tb = None if bias is None else tr.tensor(bias.astype(dtype), requires_grad=True)
    loss = op(tx, tw, tb, targets)
    (loss * scale).backward()
    grads = [host(tx.grad), host(tw.grad), None if tb is None else host(tb.grad)]
    return loss, grads


def _composed(x, weight, bias, targets):
    return F.softmax_cross_entropy(F.linear(x, weight, bias), targets)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_cross_entropy_matches_linear_then_cross_entropy(threads, with_bias, monkeypatch):
    """The fused float32 path (base-2 logits, exp2, bias added in cache, rows split over
    the threads with their own BLAS calls) against the two ops in float64; huge rows
    (redone shifted), ignored rows and an upstream gradient of 3 included."""
    from threadpoolctl import threadpool_limits

    from tinygrad_rnn import threads as tr_threads

    ranges = []

    def recording(xp, rows, work, min_rows=1):
        tr_threads.parallel_rows(xp, rows, lambda a, b: (ranges.append((rows, a, b)), work(a, b)),
                                 min_rows)  # fmt: skip

    monkeypatch.setattr(F, "parallel_rows", recording)
    x, weight, bias, targets = _head_case(1, 192, 20, 3000)
    x = x.reshape(4, 48, 20)  # leading axes, as a model's (N, T, H) features
    targets = targets.reshape(4, 48)
    x[1, 5] *= 300  # float32 exp overflows without the shift
    x[2, 7] *= -300
    bias = bias if with_bias else None
    before = tr_threads.get_num_threads()
    with threadpool_limits():
        tr_threads.set_num_threads(threads)
        try:
            loss, grads = _head_grads(F.linear_cross_entropy, x, weight, bias, targets)
        finally:
            tr_threads.set_num_threads(before, blas=False)
    assert [entry.op for entry in loss.tape()] == ["linear_cross_entropy"]  # fused
    forward = sorted((a, b) for rows, a, b in ranges if rows == 192)  # the softmax rows
    assert forward == ([(0, 96), (96, 192)] if threads == 2 else [(0, 192)])
    ref_loss, ref_grads = _head_grads(_composed, x, weight, bias, targets, dtype=np.float64)
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=2e-5)
    for got, want in zip(grads, ref_grads):
        if want is None:
            assert got is None
            continue
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5 * np.abs(want).max())


def test_linear_cross_entropy_is_one_tape_entry_in_float32_and_two_ops_otherwise():
    x, weight, bias, targets = _head_case(2, 8, 3, 5, ignore_fraction=0)
    fused = F.linear_cross_entropy(
        tr.tensor(x.astype(np.float32), requires_grad=True),
        tr.tensor(weight.astype(np.float32), requires_grad=True), None, targets,
    )  # fmt: skip
    assert [entry.op for entry in fused.tape()] == ["linear_cross_entropy"]
    composed = F.linear_cross_entropy(
        tr.tensor(x, requires_grad=True), tr.tensor(weight, requires_grad=True),
        tr.tensor(bias), targets,
    )  # float64, the checking dtype: the two ops, exactly  # fmt: skip
    assert [entry.op for entry in composed.tape()] == ["linear", "softmax_cross_entropy"]
    with tr.no_grad():  # no backward to come: nothing to fuse for
        plain = F.linear_cross_entropy(
            tr.tensor(x.astype(np.float32)), tr.tensor(weight.astype(np.float32)), None, targets
        )
    np.testing.assert_allclose(plain.item(), fused.item(), rtol=1e-6)


def test_linear_cross_entropy_gradients_match_finite_differences():
    x, weight, bias, targets = _head_case(3, 6, 4, 7)
    gradcheck(
        lambda a, w, b: F.linear_cross_entropy(a, w, b, targets),
        [tr.tensor(x, requires_grad=True), tr.tensor(weight, requires_grad=True),
         tr.tensor(bias, requires_grad=True)],
    )  # fmt: skip


def test_linear_cross_entropy_names_bad_arguments():
    x = tr.tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    weight = tr.tensor(np.zeros((4, 3), np.float32), requires_grad=True)
    with pytest.raises(IndexError, match="linear_cross_entropy: target 4 .*4 classes"):
        F.linear_cross_entropy(x, weight, None, np.array([0, 4]))
    with pytest.raises(ValueError, match=r"targets shape \(3,\).*\(2,\)"):
        F.linear_cross_entropy(x, weight, None, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"in_features=3; got input shape \(2, 5\)"):
        F.linear_cross_entropy(tr.tensor(np.zeros((2, 5), np.float32)), weight, None, [0, 1])
    with pytest.raises(ValueError, match=r"bias shape \(3,\) must be \(out_features,\)"):
        F.linear_cross_entropy(x, weight, tr.tensor(np.zeros(3, np.float32)), [0, 1])
    with tr.no_grad(), pytest.raises(ValueError, match=r"bias shape \(3,\) must be"):
        F.linear_cross_entropy(x, weight, tr.tensor(np.zeros(3, np.float32)), [0, 1])


@pytest.mark.parametrize("bias_shape", [(1,), (2, 4), (3,)])
def test_linear_refuses_a_bias_that_is_not_out_features_long(bias_shape):
    x = tr.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    weight = tr.tensor(np.ones((4, 3), np.float32), requires_grad=True)
    bias = tr.tensor(np.ones(bias_shape, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=rf"linear: bias shape {re.escape(str(bias_shape))} "
                                         r"must be \(out_features,\) = \(4,\)"):  # fmt: skip
        F.linear(x, weight, bias)
    with pytest.raises(ValueError, match=r"weight must be \(out_features, in_features\)"):
        F.linear(x, tr.tensor(np.ones(3, np.float32)))


# ---- mse_loss -----------------------------------------------------------------
@settings(deadline=None, max_examples=10)
@given(shape=st.lists(st.integers(1, 3), min_size=0, max_size=3))
def test_mse_gradients_match_finite_differences(shape):
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    assert gradcheck(F.mse_loss, [pred, target])


def test_mse_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    pred, target = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    x = tr.tensor(pred, requires_grad=True)
    loss = F.mse_loss(x, target)
    loss.backward()
    tx = torch.tensor(pred, requires_grad=True)
    tloss = torch.nn.functional.mse_loss(tx, torch.tensor(target))
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(host(x.grad), tx.grad.numpy(), rtol=1e-12)
    assert [entry.op for entry in loss.tape()] == ["mse_loss"]


def test_mse_needs_equal_shapes_and_casts_a_constant_target():
    x = tr.tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=r"target shape \(3,\).*\(2, 3\)"):
        F.mse_loss(x, np.zeros(3, np.float32))
    loss = F.mse_loss(x, np.ones((2, 3), np.float64))
    assert loss.dtype == np.float32 and loss.item() == 1.0


# ---- metrics ------------------------------------------------------------------
def test_perplexity_is_exp_of_mean_cross_entropy():
    logits, targets = _case(3, (2, 5), 7, ignore_fraction=0.2)
    x = tr.tensor(logits)
    mean_ce = F.softmax_cross_entropy(x, targets)
    expected = math.exp(mean_ce.item())
    assert F.perplexity(mean_ce.item()) == pytest.approx(expected)
    assert F.perplexity(mean_ce) == pytest.approx(expected)
    assert F.perplexity(x, targets) == pytest.approx(expected)
    assert F.perplexity(0.0) == 1.0
    assert F.perplexity(1e6) == math.inf


def test_accuracy_from_logits_or_ids_with_ignore_index():
    logits = tr.tensor(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    targets = np.array([1, 1, 1, -1])
    assert F.accuracy(logits, targets) == 0.5  # the -1 counts as a miss here
    assert F.accuracy(logits, targets, ignore_index=-1) == pytest.approx(2 / 3)
    assert F.accuracy(tr.tensor(np.array([1, 0, 1, 0])), tr.tensor(targets), -1) == pytest.approx(
        2 / 3
    )
    assert math.isnan(F.accuracy(logits, np.full(4, -1), ignore_index=-1))
    with pytest.raises(ValueError, match="targets"):
        F.accuracy(logits, np.array([1, 1]))


# Scaled losses: the upstream gradient a loss receives is then far from +1, negative too,
# so a backward that drops or flips it shows (gradcheck's own u is +-1.7 on a scalar).
SCALES = st.sampled_from([-2.5, -1.0, -0.3, 0.4, 3.0])


@settings(deadline=None, max_examples=10)
@given(shape=st.lists(st.integers(1, 3), min_size=0, max_size=3), scale=SCALES,
       seed=st.integers(0, 2**16))  # fmt: skip
def test_mse_gradient_follows_a_scaled_upstream_gradient(shape, scale, seed):
    rng = np.random.default_rng(seed)
    pred, target = rng.standard_normal(shape), rng.standard_normal(shape)
    assert gradcheck(lambda p, t: F.mse_loss(p, t) * scale, [pred, target])


@settings(deadline=None, max_examples=10)
@given(lead=st.lists(st.integers(1, 3), min_size=1, max_size=2), vocab=st.integers(2, 4),
       scale=SCALES, seed=st.integers(0, 2**16))  # fmt: skip
def test_cross_entropy_gradient_follows_a_scaled_upstream_gradient(lead, vocab, scale, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((*lead, vocab)) * 3
    targets = rng.integers(0, vocab, size=lead)
    targets[rng.random(lead) < 0.3] = -1
    assert gradcheck(lambda z: F.softmax_cross_entropy(z, targets) * scale, [logits])


@settings(deadline=None, max_examples=5)
@given(scale=SCALES, seed=st.integers(0, 2**16))
def test_linear_cross_entropy_gradient_follows_a_scaled_upstream_gradient(scale, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    targets = rng.integers(0, 5, 4)
    targets[1] = -1
    assert gradcheck(
        lambda a, ww, bb: F.linear_cross_entropy(a, ww, bb, targets) * scale, [x, w, b]
    )
