"""Backends: the registry, choosing the default (env var, use_backend, `with
tr.backend(...)`), moving tensors, and the errors for a missing CuPy or for
mixing arrays of two backends in one op."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import to_host as host_copy

import tinygrad_rnn as tr
from tinygrad_rnn.backend import (
    Backend,
    BackendMismatchError,
    BackendUnavailableError,
    available_backends,
    backend_of,
    default_backend,
    get_array_module,
    get_backend,
    register_backend,
    scatter_add,
    to_host,
)
from tinygrad_rnn.tensor import check_same_backend

# `tr.backend` is the context manager, so reach the module through importlib.
backend_module = importlib.import_module("tinygrad_rnn.backend")
REPO_ROOT = Path(__file__).resolve().parents[1]
CUPY_REASON = get_backend("cupy").unavailable_reason()
needs_no_cupy = pytest.mark.skipif(CUPY_REASON is None, reason="CuPy is usable here")


class FakeCupyArray:
    """Stands in for a cupy.ndarray where CuPy is not installed: the backend
    is read from the type's module, so this passes for one."""

    __module__ = "cupy._core.core"
    __cuda_array_interface__: dict = {}
    shape = (2,)
    dtype = np.dtype(np.float32)


@pytest.fixture(autouse=True)
def restore_default_backend(monkeypatch):
    """Each test may change the default; the suite's backend comes back after."""
    monkeypatch.setattr(backend_module, "_default_name", backend_module._default_name)
    yield


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (a fresh default backend) from the repo root."""
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---- the registry ----------------------------------------------------------------------
def test_registry_holds_numpy_and_cupy():
    backends = available_backends()
    assert set(backends) >= {"numpy", "cupy"}
    assert backends["numpy"] is None
    assert get_backend("numpy").xp is np
    assert get_backend("NumPy").name == "numpy"
    assert get_backend(get_backend("numpy")) is get_backend("numpy")


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown backend 'tpu'.*\['cupy', 'numpy'"):
        tr.use_backend("tpu")


def test_a_registered_backend_is_chosen_like_the_built_ins(monkeypatch):
    monkeypatch.setitem(backend_module._REGISTRY, "host", None)  # removed again afterwards
    register_backend(Backend("host", "numpy", "it ships with numpy"))
    assert available_backends()["host"] is None
    with tr.backend("host"):
        assert default_backend() == "host"
        assert tr.tensor([1.0]).backend == "numpy"


def test_a_backend_whose_module_is_missing_says_why_and_how_to_install(monkeypatch):
    monkeypatch.setitem(backend_module._REGISTRY, "absent", None)
    register_backend(Backend("absent", "no_such_module_xyz", "Install it with `pip install xyz`."))
    reason = available_backends()["absent"]
    assert "no_such_module_xyz" in reason and "pip install xyz" in reason
    with pytest.raises(BackendUnavailableError, match="pip install xyz"):
        tr.use_backend("absent")


def test_threads_asking_during_a_slow_probe_wait_for_its_answer():
    """The check ran once, but a second thread asking meanwhile got xp = None."""
    import threading
    import time

    def slow_probe(xp):
        time.sleep(0.3)  # as CuPy's probe, which starts CUDA
        return None

    slow = Backend("slow", "numpy", "", probe=slow_probe)
    first = threading.Thread(target=lambda: slow.xp)
    first.start()
    time.sleep(0.05)  # the first thread is inside the probe now
    assert slow.xp is np
    first.join()


# ---- choosing the default -------------------------------------------------------------------
def test_use_backend_only_affects_tensors_created_afterwards(backend_name):
    before = tr.tensor([1.0])
    assert before.backend == backend_name
    tr.use_backend("numpy")
    assert default_backend() == "numpy"
    assert tr.tensor([1.0]).backend == "numpy"
    assert before.backend == backend_name


def test_use_backend_holds_for_other_threads_too():
    tr.use_backend("numpy")
    seen = []
    worker = threading.Thread(target=lambda: seen.append(default_backend()))
    worker.start()
    worker.join()
    assert seen == ["numpy"]


def test_with_backend_sets_the_default_inside_and_restores_it(backend_name):
    with tr.backend("numpy") as chosen:
        assert chosen.name == "numpy"
        assert tr.tensor([1.0]).backend == "numpy"
        with tr.backend("numpy"):
            assert default_backend() == "numpy"
    assert default_backend() == backend_name
    with pytest.raises(KeyError), tr.backend("numpy"):
        raise KeyError("restored even after an error")
    assert default_backend() == backend_name


def test_tensor_backend_argument_overrides_the_default():
    assert tr.tensor([1.0], backend="numpy").backend == "numpy"


def test_env_var_chooses_the_default_backend():
    result = run_python(
        "import tinygrad_rnn as tr; print(tr.tensor([1.0]).backend)", TINYGRAD_RNN_BACKEND="numpy"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"


def test_env_var_with_an_unknown_backend_is_an_error():
    result = run_python("import tinygrad_rnn as tr; tr.tensor([1.0])", TINYGRAD_RNN_BACKEND="tpu")
    assert result.returncode != 0
    assert "TINYGRAD_RNN_BACKEND='tpu' is not a backend" in result.stderr


@needs_no_cupy
def test_env_var_cupy_without_cupy_raises_on_first_use():
    result = run_python("import tinygrad_rnn as tr; tr.tensor([1.0])", TINYGRAD_RNN_BACKEND="cupy")
    assert result.returncode != 0
    assert "BackendUnavailableError" in result.stderr and "pip install" in result.stderr


# ---- CuPy missing -----------------------------------------------------------------------------
@needs_no_cupy
def test_choosing_cupy_without_cupy_says_why_and_how_to_install(backend_name):
    reason = available_backends()["cupy"]
    assert "cupy" in reason and "pip install" in reason
    for choose in (
        lambda: tr.use_backend("cupy"),
        lambda: tr.backend("cupy").__enter__(),
        lambda: tr.tensor([1.0], backend="cupy"),
        lambda: tr.tensor([1.0]).to("cupy"),
    ):
        with pytest.raises(BackendUnavailableError, match=r"backend 'cupy'.*pip install"):
            choose()
    assert default_backend() == backend_name  # a failed choice changes nothing


# ---- mixing backends ---------------------------------------------------------------------
def test_check_same_backend_names_the_op_and_both_backends():
    with pytest.raises(BackendMismatchError, match=r"'matmul'.*\['cupy', 'numpy'\]"):
        check_same_backend("matmul", np.ones(2), FakeCupyArray())
    check_same_backend("add", np.ones(2), np.ones(3), None, 2.0, np.float32(1))  # all host: fine


@pytest.mark.parametrize(
    "op", [lambda t, a: t + a, lambda t, a: a * t, lambda t, a: tr.where(a, t, 0.0)]
)
def test_an_op_given_another_backends_array_raises(op):
    x = tr.tensor(np.ones(2, np.float32), backend="numpy")
    with pytest.raises(BackendMismatchError, match="cupy"):
        op(x, FakeCupyArray())


def test_backend_of_reads_the_array_type():
    assert backend_of(np.ones(2)) == "numpy"
    assert backend_of(FakeCupyArray()) == "cupy"
    assert backend_of(3.0) == "numpy"


@pytest.mark.cupy
def test_real_cupy_and_numpy_arrays_in_one_op_raise():
    on_gpu = tr.tensor(np.ones(3), backend="cupy")
    on_host = tr.tensor(np.ones(3), backend="numpy")
    for op, name in ((lambda a, b: a + b, "add"), (lambda a, b: a * b, "mul")):
        with pytest.raises(BackendMismatchError, match=rf"'{name}'.*\['cupy', 'numpy'\]"):
            op(on_gpu, on_host)
    with pytest.raises(BackendMismatchError):
        on_gpu @ np.ones((3, 2))


# ---- moving tensors and finding the array module -----------------------------------------------
def test_to_the_same_backend_is_the_tensor_itself(backend_name):
    x = tr.tensor([1.0, 2.0], requires_grad=True)
    assert x.to(backend_name) is x


@pytest.mark.cupy
def test_to_cupy_and_back_keeps_values_dtype_and_requires_grad():
    import cupy  # noqa: PLC0415 - only where CuPy runs

    x = tr.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True, backend="numpy")
    on_gpu = x.to("cupy")
    assert on_gpu.backend == "cupy" and isinstance(on_gpu.data, cupy.ndarray)
    assert on_gpu.requires_grad and on_gpu.is_leaf and on_gpu.dtype == np.float64
    back = on_gpu.to("numpy")
    assert back.backend == "numpy" and type(back.data) is np.ndarray
    np.testing.assert_array_equal(back.numpy(), x.numpy())
    np.testing.assert_array_equal(on_gpu.numpy(), x.numpy())  # numpy() is always host
    (on_gpu * on_gpu).sum().backward()
    assert get_array_module(on_gpu.grad) is cupy
    np.testing.assert_allclose(on_gpu.grad.get(), 2 * x.numpy())


@pytest.mark.cupy
def test_get_array_module_of_cupy_data():
    import cupy  # noqa: PLC0415

    x = tr.tensor([1.0], backend="cupy")
    assert get_array_module(x) is cupy and get_array_module(x.data) is cupy
    assert tr.get_array_module(x.data * 2) is cupy
    # A raw CuPy array is its own data: its `.data` is a device pointer.
    assert type(to_host(x.data)) is np.ndarray and to_host(x.data * 2)[0] == 2.0


def test_get_array_module_of_host_data():
    x = tr.tensor([1.0], backend="numpy")
    assert get_array_module(x) is np and get_array_module(x.data) is np
    assert get_array_module(np.ones(2)) is np and get_array_module(3.0) is np


def test_to_host_gives_numpy_for_tensors_arrays_and_scalars():
    strided = np.arange(6.0)[::2]
    np.testing.assert_array_equal(to_host(strided), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(to_host(tr.tensor([1.0, 2.0])), [1.0, 2.0])
    assert type(to_host(tr.tensor([1.0]).data)) is np.ndarray
    assert to_host(3.0) == 3.0


def test_get_array_module_follows_the_data_not_the_default(backend_name, xp):
    x = tr.tensor([1.0])
    assert get_array_module(x) is xp
    with tr.backend("numpy"):
        assert get_array_module(x) is xp  # made before: stays where it was made


def test_scatter_add_sums_repeated_indices(xp):
    target = xp.zeros(3)
    scatter_add(xp, target, xp.asarray([0, 2, 0]), xp.asarray([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(host_copy(tr.Tensor(target)), [4.0, 0.0, 2.0])


def test_the_cupy_probe_refuses_a_machine_without_a_device():
    from types import SimpleNamespace

    from tinygrad_rnn.backend import _probe_cupy

    def runtime(count):
        return SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(
            getDeviceCount=lambda: count)))  # fmt: skip

    assert _probe_cupy(runtime(0)) == "no CUDA device is visible"
    assert _probe_cupy(runtime(1)) is None
