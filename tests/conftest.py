"""Shared test setup: the backend under test and the hypothesis profiles.

`pytest --backend cupy` (or TINYGRAD_RNN_BACKEND=cupy) runs the whole suite
with CuPy as the default backend; without a usable GPU every test is skipped
with the reason. HYPOTHESIS_PROFILE picks `default` (quick), `ci` (thorough)
or `gpu` (light, for a time-limited device run).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import tinygrad_rnn as tr
from tinygrad_rnn.backend import get_backend
from tinygrad_rnn.backend import to_host as backend_to_host

settings.register_profile(
    "default", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "gpu", max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_addoption(parser):
    parser.addoption(
        "--backend",
        default=None,
        choices=["numpy", "cupy"],
        help="array backend for the whole suite (default: $TINYGRAD_RNN_BACKEND or numpy)",
    )


def _requested_backend(config) -> str:
    return config.getoption("--backend") or os.environ.get("TINYGRAD_RNN_BACKEND", "numpy")


def pytest_configure(config):
    name = _requested_backend(config)
    config._tr_backend = name
    config._tr_backend_skip = get_backend(name).unavailable_reason()
    if config._tr_backend_skip is None:
        tr.use_backend(name)


def pytest_report_header(config):
    reason = config._tr_backend_skip
    return f"tinygrad-rnn backend: {config._tr_backend}" + (
        f" (SKIPPED: {reason})" if reason else ""
    )


def pytest_collection_modifyitems(config, items):
    suite_reason = config._tr_backend_skip
    cupy_reason = get_backend("cupy").unavailable_reason()
    for item in items:
        if suite_reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"backend unavailable: {suite_reason}"))
        elif "cupy" in item.keywords and cupy_reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"needs CuPy: {cupy_reason}"))


@pytest.fixture
def backend_name(request) -> str:
    """The backend the suite runs on ('numpy' or 'cupy')."""
    return request.config._tr_backend


@pytest.fixture
def xp(backend_name):
    """The array module of the backend under test."""
    return get_backend(backend_name).xp


def to_host(a):
    """A NumPy copy of an array or Tensor from any backend."""
    return backend_to_host(a)


def shared_data_path(*parts: str) -> str:
    """A path under $TINYGRAD_RNN_DATA (relative values resolve against the repo root);
    the calling test is skipped, with the reason, when the variable or the file is missing."""
    root = os.environ.get("TINYGRAD_RNN_DATA")
    if not root:
        pytest.skip("TINYGRAD_RNN_DATA is not set (point it at the shared data folder)")
    if not os.path.isabs(root):
        root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), root)
    path = os.path.join(root, *parts)
    if not os.path.exists(path):
        pytest.skip(
            f"data not found at {path} (TINYGRAD_RNN_DATA={os.environ['TINYGRAD_RNN_DATA']})"
        )
    return path
