"""The benchmark harness runs end to end and reports what it promises (shapes of the
report, not timings): `python benchmarks/run.py --quick --json` on tiny settings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinygrad_rnn.backend import get_backend

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
TRAINING = ("lm-small", "lm-large", "sine", "seq2seq")


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # The harness always benchmarks on the backend it is told (numpy here), whatever
    # backend the test suite runs with.
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def report() -> dict:
    done = _run("--quick", "--json", "--repeats", "2",
                "--cases", ",".join((*TRAINING, "memory", "roofline")))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _check_side(side: dict, repeats: int) -> None:
    assert side["min"] <= side["median"] <= side["max"]
    assert len(side["samples"]) == repeats
    assert all(v > 0 for v in side["samples"])
    assert side["peak_rss_mb"] > 0
    assert side["cpu_ms_per_step"] > 0 and side["minor_faults_per_step"] >= 0
    assert side["path"]
    assert side["threads_seen"]["threadpool_info"] is not None


def test_report_states_machine_threads_and_blas(report):
    meta = report["meta"]
    for key in ("date", "command", "cpu_model", "nproc", "backend", "dtype", "repeats",
                "quick", "env", "torch", "blas", "load1_start"):
        assert key in meta, key
    assert meta["backend"] == "numpy" and meta["dtype"] == "float32" and meta["quick"]
    assert set(meta["env"]) == {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    assert meta["blas"]["ours"], "the BLAS NumPy uses is reported"


@pytest.mark.parametrize("name", TRAINING)
def test_each_training_case_reports_both_sides_and_the_ratio(report, name):
    case = report["cases"][name]
    assert case["unit"] in ("tokens/s", "samples/s")
    assert case["threads"] == (1 if name == "sine" else 2)
    assert case["items_per_step"] > 0 and case["config"]
    _check_side(case["ours"], repeats=2)
    assert case["ours"]["threads_seen"]["ours_num_threads"] == case["threads"]
    for side in case["ours"]["threads_seen"]["threadpool_info"]:
        if side["user_api"] == "blas":  # the library splits its matmuls itself
            assert side["num_threads"] == 1, "tr.set_num_threads put BLAS on one thread"
    if case["torch"] is None:  # torch absent: skipped with a note, no ratio
        assert case["notes"]["torch"] and case["ratio"] is None
    else:
        _check_side(case["torch"], repeats=2)
        assert case["torch"]["threads_seen"]["torch_num_threads"] == case["threads"]
        expected = case["ours"]["median"] / case["torch"]["median"]
        assert case["ratio"] == pytest.approx(expected, rel=0.01)


def test_memory_case_reports_rss_at_both_checkpoints_and_a_verdict(report):
    memory = report["cases"]["memory"]
    first, last = (str(c) for c in memory["checkpoints"])
    assert memory["rss_mb"][first] > 0 and memory["rss_mb"][last] > 0
    assert memory["verdict"] in ("pass", "FAIL")
    assert memory["carried_state_tape_entries"] == 0


def test_roofline_covers_every_case_run(report):
    roofline = report["cases"]["roofline"]
    assert set(roofline["cases"]) == set(TRAINING)
    for name, case in roofline["cases"].items():
        assert case["gflop_per_step"] > 0
        assert case["ours"]["roofline_gflops"] > 0
        assert 0 < case["ours"]["fraction_of_roofline"], name
        assert all(shape["ours_gflops"] > 0 for shape in case["shapes"])


def test_the_table_shows_every_case(report):
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    table = run.render_table(report)
    assert "ours/torch" in table
    for name in (*TRAINING, "memory", "roofline"):
        assert name in table, name


def test_unknown_case_is_refused_with_the_choices():
    done = _run("--cases", "lm-huge", timeout=60)
    assert done.returncode != 0
    assert "lm-huge" in done.stderr and "lm-small" in done.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cases", ""], "no case given"),
        (["--mpi", "0"], "--mpi must be >= 2 processes; got 0"),
        (["--mpi", "2", "--threads", "1", "--cases", "sine"], "not --cases, --threads"),
        (["--wait-idle", "-1"], "--wait-idle must be >= 0 seconds"),
    ],
)
def test_a_flag_the_harness_cannot_honour_is_refused_naming_it(flags, message):
    done = _run(*flags, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.skipif(get_backend("cupy").unavailable_reason() is None,
                    reason="a GPU is here: the cupy run is the real benchmark")
def test_cupy_without_a_gpu_exits_with_one_line():
    done = _run("--backend", "cupy", "--quick", "--cases", "sine", timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--backend cupy" in lines[0]


def test_date_reference_runs_and_reports(tmp_path):
    """benchmarks/date_reference.py (the textbook's date recipe in PyTorch) trains a few
    steps and writes its figures."""
    pytest.importorskip("torch")
    from conftest import shared_data_path

    data = shared_data_path("seq2seq", "date.txt")
    script = RUN.parent / "date_reference.py"
    out = tmp_path / "ref.json"
    done = subprocess.run(
        [sys.executable, str(script), "--max-steps", "3", "--data", data, "--json", str(out),
         "--clip-percentile", "10", "--min-padding", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "seed 0 epoch 1: train1k" in done.stdout and "seed 0: test" in done.stdout
    report = json.loads(out.read_text())
    assert len(report["history"][0]["losses"]) == 3
    assert 0.0 <= report["test_accuracy"] <= 1.0
