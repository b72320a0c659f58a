"""Optimizers and gradient clipping: PyTorch's update rules, ties, state dicts.

Each optimizer runs a few float64 steps beside its torch.optim twin on the
same gradients (one parameter skips a step with grad None), and must land on
the same parameters.
"""

import math

import numpy as np
import pytest
from conftest import to_host
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tr
from tinygrad_rnn import nn, optim


def host(a):
    """A NumPy copy of a Tensor or a raw NumPy/CuPy array (such as `.grad`)."""
    return to_host(a if isinstance(a, tr.Tensor) else tr.Tensor(a))


SHAPES = [(3, 4), (4,), (2, 1, 3)]


def _params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(tr.tensor(rng.standard_normal(s).astype(dtype)).data) for s in SHAPES]


def _grads(step, seed=100):
    rng = np.random.default_rng(seed + step)
    return [rng.standard_normal(s) for s in SHAPES]


def _set_grads(params, grads, skip=None):
    for i, (p, g) in enumerate(zip(params, grads)):
        p.grad = None if i == skip else tr.tensor(g.astype(p.dtype)).data


CASES = [
    ("SGD", "SGD", dict(lr=0.1)),
    ("SGD", "SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", "SGD", dict(lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.01)),
    ("AdaGrad", "Adagrad", dict(lr=0.1)),
    (
        "AdaGrad",
        "Adagrad",
        dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5),
    ),
    ("RMSprop", "RMSprop", dict(lr=0.01)),
    ("RMSprop", "RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.1)),
    ("Adam", "Adam", dict(lr=0.01)),
    ("Adam", "Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
]


@pytest.mark.parametrize("ours, theirs, kwargs", CASES)
def test_optimizer_matches_torch_over_several_steps(ours, theirs, kwargs):
    torch = pytest.importorskip("torch")
    params = _params()
    torch_params = [torch.tensor(host(p), requires_grad=True) for p in params]
    opt = getattr(optim, ours)(params, **kwargs)
    torch_opt = getattr(torch.optim, theirs)(torch_params, **kwargs)
    for step in range(6):
        grads = _grads(step)
        skip = 1 if step == 2 else None  # a grad of None skips that parameter this step
        _set_grads(params, grads, skip)
        for i, (tp, g) in enumerate(zip(torch_params, grads)):
            tp.grad = None if i == skip else torch.tensor(g)
        opt.step()
        torch_opt.step()
    for p, tp in zip(params, torch_params):
        np.testing.assert_allclose(host(p), tp.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ours, theirs, kwargs", CASES[1::2])
def test_float32_parameters_stay_float32_and_in_their_buffers(ours, theirs, kwargs):
    params = _params(dtype=np.float32)
    buffers = [p.data for p in params]
    opt = getattr(optim, ours)(params, **kwargs)
    for step in range(2):
        _set_grads(params, _grads(step))
        opt.step()
    for p, buffer in zip(params, buffers):
        assert p.data is buffer and p.dtype == np.float32
    for entry in opt.state.values():
        for value in entry.values():
            assert not hasattr(value, "dtype") or value.dtype == np.float32


def test_a_parameter_listed_twice_is_updated_once():
    (p,) = _params()[:1]
    before = host(p).copy()
    opt = optim.SGD([p, p], lr=0.5)
    assert opt.params == [p]
    p.grad = tr.tensor(np.ones(p.shape)).data
    opt.step()
    np.testing.assert_allclose(host(p), before - 0.5)



@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def library_threads(request):
    """The library's pool at 1 and at 2 threads (BLAS left as it is), restored after."""
    from tinygrad_rnn import threads

    before = threads.get_num_threads()
    threads.set_num_threads(request.param, blas=False)
    yield request.param
    threads.set_num_threads(before, blas=False)


@pytest.mark.parametrize("shape", [(300, 200), (70001,), (5, 13107), (1000, 601)])
def test_sgd_update_of_a_big_parameter_is_exact(shape, library_threads):
    """Parameters over one update block (32K elements, the tail block included) are
    updated block by block, a big one (over 8 blocks) split over the threads; the result
    must be p - lr * g exactly, in float32."""
    rng = np.random.default_rng(0)
    start = rng.standard_normal(shape).astype(np.float32)
    grad = rng.standard_normal(shape).astype(np.float32)
    p = tr.tensor(start.copy(), requires_grad=True)  # a NumPy array is taken as is
    p.grad = tr.tensor(grad.copy()).data
    optim.SGD([p], lr=0.3).step()
    expected = start - np.float32(0.3) * grad
    np.testing.assert_array_equal(to_host(p), expected)
    np.testing.assert_array_equal(to_host(tr.Tensor(p.grad)), grad)  # the gradient is untouched

def test_lr_is_an_attribute_the_trainer_can_change():
    (p,) = _params()[:1]
    opt = optim.Adam([p], lr=0.1)
    opt.lr = 0.0
    before = host(p).copy()
    p.grad = tr.tensor(np.ones(p.shape)).data
    opt.step()
    np.testing.assert_array_equal(host(p), before)
    assert opt.state_dict()["param_groups"][0]["lr"] == 0.0


def test_zero_grad_clears_every_gradient():
    params = _params()
    _set_grads(params, _grads(0))
    opt = optim.SGD(params, lr=0.1)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("ours, theirs, kwargs", CASES[1::2])
def test_state_dict_round_trip_continues_identically(ours, theirs, kwargs):
    params_a = _params()
    opt_a = getattr(optim, ours)(params_a, **kwargs)
    for step in range(3):
        _set_grads(params_a, _grads(step), skip=2 if step == 0 else None)
        opt_a.step()
    state = opt_a.state_dict()
    params_b = [nn.Parameter(tr.tensor(host(p).copy()).data) for p in params_a]
    opt_b = getattr(optim, ours)(params_b, lr=123.0)
    opt_b.load_state_dict(state)
    assert opt_b.lr == kwargs["lr"]
    # The state dict holds host copies: changing them changes neither optimizer.
    for entry in state["state"].values():
        for value in entry.values():
            if isinstance(value, np.ndarray):
                value[...] = 7.0
    for step in range(3, 5):
        _set_grads(params_a, _grads(step))
        _set_grads(params_b, _grads(step))
        opt_a.step()
        opt_b.step()
    for a, b in zip(params_a, params_b):
        np.testing.assert_array_equal(host(a), host(b))


def test_load_state_dict_checks_everything_before_writing():
    params = _params()
    opt = optim.Adam(params, lr=0.1)
    _set_grads(params, _grads(0))
    opt.step()
    good = opt.state_dict()
    before = {i: host(e["exp_avg"]).copy() for i, e in opt.state.items()}

    bad_shape = opt.state_dict()
    bad_shape["state"][2]["exp_avg_sq"] = np.zeros((9,))
    with pytest.raises(ValueError, match=r"state 2/exp_avg_sq has shape \(9,\); expected"):
        opt.load_state_dict(bad_shape)
    sgd = optim.SGD(params, lr=0.1, momentum=0.9)
    sgd.step()
    with pytest.raises(KeyError, match="misses.*betas"):
        opt.load_state_dict(sgd.state_dict())
    missing = opt.state_dict()
    del missing["state"][0]["exp_avg_sq"]
    with pytest.raises(KeyError, match="state of parameter 0 has keys"):
        opt.load_state_dict(missing)
    with pytest.raises(ValueError, match="3 parameters"):
        optim.Adam(params[:2]).load_state_dict(good)
    for i, e in opt.state.items():
        np.testing.assert_array_equal(host(e["exp_avg"]), before[i])


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("lr", -1.0, r"lr must be a number in \[0.0, inf\); got -1.0"),
        ("betas", [0.9, 0.999, 0.5], r"betas must be a pair"),
        ("betas", [1.0, 0.999], r"betas\[0\] must be a number in \[0.0, 1.0\)"),
        ("eps", -1.0, r"eps must be a number in \[0.0, inf\)"),
        ("weight_decay", math.nan, r"weight_decay must be a number"),
    ],
)
def test_a_loaded_hyperparameter_gets_the_constructors_checks(key, value, message):
    """Loaded hyperparameters were only checked to be numbers: lr=-1 loaded and ascended."""
    opt = optim.Adam(_params(), lr=0.1)
    state = opt.state_dict()
    state["param_groups"][0][key] = value
    with pytest.raises(ValueError, match="the state dict's param group: Adam: " + message):
        opt.load_state_dict(state)
    assert opt.lr == 0.1 and opt.betas == (0.9, 0.999)


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: optim.Adam(p, lr=0.1)])  # fmt: skip
def test_a_step_with_one_bad_gradient_moves_no_parameter(make):
    params = _params()
    opt = make(params)
    _set_grads(params, _grads(0))
    params[-1].grad = np.zeros(params[-1].size + 1, dtype=params[-1].dtype)
    before = [host(p.data).copy() for p in params]
    with pytest.raises(ValueError, match=rf"parameter {len(params) - 1} has shape"):
        opt.step()
    for p, old in zip(params, before):
        np.testing.assert_array_equal(host(p.data), old)
    assert opt.state == {}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: optim.SGD(p, lr=-1), "lr"),
        (lambda p: optim.SGD([], lr=0.1), "empty"),
        (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "nesterov"),
        (lambda p: optim.Adam(p, betas=(0.9, 1.0)), "betas"),
        (lambda p: optim.RMSprop(p, alpha=-0.5), "alpha"),
    ],
)
def test_bad_hyperparameters_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make(_params())


def test_params_must_be_trainable_tensors():
    with pytest.raises(TypeError, match=r"params\[0\]"):
        optim.SGD([np.zeros(3)], lr=0.1)


# ---- clip_grad_norm -----------------------------------------------------------
@settings(deadline=None)
@given(
    max_norm=st.floats(1e-9, 20.0), scale=st.floats(1e-9, 10.0), seed=st.integers(0, 100)
)
# Norms just under a tiny max_norm: torch scales them too, by max_norm / (norm + 1e-6).
@example(max_norm=1e-7, scale=1e-8, seed=0)
@example(max_norm=1e-6, scale=1e-7, seed=1)
def test_clip_grad_norm_matches_torch(max_norm, scale, seed):
    torch = pytest.importorskip("torch")
    params = _params()
    grads = [g * scale for g in _grads(seed)]
    _set_grads(params, grads, skip=1)
    torch_params = [torch.tensor(host(p), requires_grad=True) for p in params]
    for i, (tp, g) in enumerate(zip(torch_params, grads)):
        tp.grad = None if i == 1 else torch.tensor(g)
    norm = nn.clip_grad_norm(params, max_norm)
    torch_norm = torch.nn.utils.clip_grad_norm_(torch_params, max_norm)
    assert isinstance(norm, float)
    assert norm == pytest.approx(torch_norm.item(), rel=1e-12)
    for p, tp in zip(params, torch_params):
        if tp.grad is None:
            assert p.grad is None
        else:
            # Both scale by min(1, max_norm / (norm + 1e-6)); rounding apart, the same.
            np.testing.assert_allclose(host(p.grad), tp.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("size", [1000, 600_001])
def test_clip_grad_norm_of_big_float32_gradients(size, library_threads):
    """A big float32 gradient's norm and scaling run in blocks over the threads: the norm
    agrees with float64's, the scaling is exact in float32."""
    rng = np.random.default_rng(size)
    grads = [rng.standard_normal(n).astype(np.float32) for n in (size, 7)]
    params = [tr.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = tr.tensor(g.copy()).data
    norm = nn.clip_grad_norm(params, 1.0)
    exact = math.sqrt(sum(float(np.dot(g.astype(np.float64), g.astype(np.float64))) for g in grads))
    assert norm == pytest.approx(exact, rel=1e-5)
    scale = np.float32(1.0 / (norm + 1e-6))
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(to_host(tr.Tensor(p.grad)), g * scale)


def test_clip_grad_norm_leaves_small_gradients_alone_and_counts_ties_once():
    (p,) = _params()[:1]
    p.grad = tr.tensor(np.full(p.shape, 0.5)).data  # norm = sqrt(12 * 0.25) = sqrt(3)
    assert nn.clip_grad_norm([p, p], 10.0) == pytest.approx(math.sqrt(3))
    np.testing.assert_array_equal(host(p.grad), 0.5)
    assert nn.clip_grad_norm([p], 1.0) == pytest.approx(math.sqrt(3))
    assert np.linalg.norm(host(p.grad)) == pytest.approx(1.0, rel=1e-5)
    assert nn.clip_grad_norm(_params(), 1.0) == 0.0  # no gradients at all


# ---- AdaptiveClip (AutoClip) -----------------------------------------------------
@settings(deadline=None, max_examples=30)
@given(
    percentile=st.floats(1.0, 100.0),
    scales=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=40),
    max_norm=st.none() | st.floats(0.01, 100.0),
)
@example(percentile=1.0, scales=[0.015625], max_norm=0.0625)  # small norms: PyTorch's 1e-6 shows
def test_adaptive_clip_bounds_each_step_by_the_percentile_of_the_norms_so_far(
    percentile, scales, max_norm
):
    clip = nn.AdaptiveClip(percentile, max_norm)
    params = _params()
    seen = []
    for step, scale in enumerate(scales):
        _set_grads(params, [g * scale for g in _grads(step)], skip=1)
        before = [host(p.grad).copy() if p.grad is not None else None for p in params]
        norm = clip(params)
        seen.append(norm)
        bound = float(np.percentile(seen, percentile))
        if max_norm is not None:
            bound = min(bound, max_norm)
        assert clip.limit() == pytest.approx(np.percentile(seen, percentile), rel=1e-12)
        grads = [host(p.grad) for p in params if p.grad is not None]
        after = math.sqrt(sum(float(np.sum(g**2)) for g in grads))
        # clipped as PyTorch does, scaled by bound / (norm + 1e-6), but only above the
        # bound: a norm at it (the first step's, every new maximum at percentile 100) stays
        expected = norm * bound / (norm + 1e-6) if norm > bound else norm
        assert after == pytest.approx(expected, rel=1e-5)
        ratio = after / norm  # one scale for every gradient: the direction is kept
        for p, g in zip(params, before):
            if g is not None:
                np.testing.assert_allclose(host(p.grad), g * ratio, rtol=1e-5, atol=1e-12)
    assert clip.history == seen


def test_adaptive_clip_cuts_a_burst_to_the_usual_size_and_its_history_round_trips():
    (p,) = _params()[:1]
    clip = nn.AdaptiveClip(10.0, max_norm=5.0)
    for _ in range(20):  # a run of steps with norm 1
        p.grad = tr.tensor(np.full(p.shape, 1 / math.sqrt(p.size))).data
        assert clip([p]) == pytest.approx(1.0)
    p.grad = tr.tensor(np.full(p.shape, 4 / math.sqrt(p.size))).data  # a burst, under max_norm
    assert clip([p]) == pytest.approx(4.0)
    assert np.linalg.norm(host(p.grad)) == pytest.approx(1.0, rel=1e-5)  # back to the usual

    restored = nn.AdaptiveClip(10.0, max_norm=5.0)
    restored.load_state_dict(clip.state_dict())
    assert restored.history == clip.history and restored.limit() == clip.limit()


def test_adaptive_clip_at_the_100th_percentile_never_clips():
    """The largest norm so far is never below this step's: 100 turns AutoClip off."""
    (p,) = _params()[:1]
    clip = nn.AdaptiveClip(100.0)
    for scale in (1.0, 0.1, 50.0, 3.0):
        g = np.full(p.shape, scale)
        p.grad = tr.tensor(g).data
        clip([p])
        np.testing.assert_array_equal(host(p.grad), g)


@pytest.mark.parametrize("bad", [0, -5, 101, math.nan, True, "10"])
def test_adaptive_clip_refuses_a_bad_percentile_by_name(bad):
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\]") as err:
        nn.AdaptiveClip(bad)
    assert repr(bad) in str(err.value)


def test_adaptive_clip_skips_a_non_finite_norm_without_recording_it():
    params = _params()
    _set_grads(params, _grads(0))
    params[0].grad[0] = math.nan
    clip = nn.AdaptiveClip(50.0)
    with pytest.raises(FloatingPointError, match="AdaptiveClip"):
        clip(params)
    assert not math.isfinite(clip(params, error_if_nonfinite=False))
    assert clip.history == []


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_clip_grad_norm_refuses_a_non_finite_norm_or_reports_it(bad):
    params = _params()
    _set_grads(params, _grads(0))
    grads = [p.grad.copy() for p in params]
    params[1].grad[0] = bad
    with pytest.raises(FloatingPointError, match="not finite|NaN or inf"):
        nn.clip_grad_norm(params, 1.0)
    norm = nn.clip_grad_norm(params, 1.0, error_if_nonfinite=False)
    assert not math.isfinite(norm)
    for p, g in zip(params, grads):  # untouched, apart from the planted value
        np.testing.assert_array_equal(host(p.grad).ravel()[1:], host(g).ravel()[1:])
