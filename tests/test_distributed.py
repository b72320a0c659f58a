"""Data-parallel training over MPI: sharding, one allreduce a step, equivalence with one process
at P x the batch, exact resume, rank-0-only output, and no hang when a rank dies.

The MPI tests start real processes (`mpiexec -n 2` on this machine) running
tests/mpi_scripts/train_case.py or the CLI; they are skipped, with the reason, where mpi4py is
missing or mpiexec cannot start a two-rank hello world. The others run in this process with
stand-in communicators.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinygrad_rnn import checkpoint
from tinygrad_rnn.data import DataLoader
from tinygrad_rnn.train.distributed import ShardedLoader, find_mpiexec

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "mpi_scripts" / "train_case.py"
HELLO = "from mpi4py import MPI; n = MPI.COMM_WORLD.allreduce(1); print(f'ranks={n}')"


def _load_cases():
    spec = importlib.util.spec_from_file_location("train_case", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cases = _load_cases()


# ---- in this process -------------------------------------------------------------------
@settings(deadline=None)
@given(
    n=st.integers(1, 60),
    per_rank=st.integers(1, 6),
    world_size=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_sharded_batches_stacked_in_rank_order_are_the_single_process_batches(
    n, per_rank, world_size, seed
):
    assume(n >= per_rank * world_size)
    X = np.arange(n)[:, None] * 10
    Y = np.arange(n)
    single = DataLoader(X, Y, per_rank * world_size, shuffle=True, drop_last=True, seed=seed)
    shards = [ShardedLoader(X, Y, per_rank, r, world_size, seed=seed) for r in range(world_size)]
    for _ in range(2):  # a fresh permutation each epoch, the same on every rank
        expected = list(single)
        got = [list(shard) for shard in shards]
        assert [len(g) for g in got] == [len(expected)] * world_size
        for k, (xb, yb) in enumerate(expected):
            np.testing.assert_array_equal(np.concatenate([g[k][0] for g in got]), xb)
            np.testing.assert_array_equal(np.concatenate([g[k][1] for g in got]), yb)


def test_a_sharded_epoch_is_set_up_by_iter_itself_as_a_data_loaders_is():
    """The trainer reads the position right after iter(): it must be the new epoch's 0,
    not the last epoch's end (a distributed run past epoch 1 could not be resumed)."""
    X = np.arange(20)[:, None]
    shard = ShardedLoader(X, X[:, 0], 5, 0, 2, seed=1)
    list(shard)
    assert shard.state_dict()["next_batch"] == 2
    batches = iter(shard)
    assert shard.state_dict()["next_batch"] == 0 and shard.global_loader.epoch == 2
    next(batches)
    assert shard.state_dict()["next_batch"] == 1


@pytest.mark.parametrize("bad", ["abc", "0", "-5", "inf"])
def test_a_bad_mpi_timeout_variable_is_refused_naming_it(bad):
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed: pip install 'tinygrad-rnn[mpi]' (mpi4py, mpich)")
    code = "from tinygrad_rnn.train.distributed import MPICommunicator; MPICommunicator()"
    env = {**os.environ, "TINYGRAD_RNN_MPI_TIMEOUT": bad}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode != 0
    assert f"$TINYGRAD_RNN_MPI_TIMEOUT must be a number of seconds > 0; got {bad!r}" in done.stderr


def test_sharded_loader_names_a_training_set_smaller_than_one_global_batch():
    with pytest.raises(ValueError, match="2 x 8 = 16"):
        ShardedLoader(np.zeros((10, 3)), np.zeros(10), 8, 0, 2, seed=0)


class OneRank:
    """A communicator of one rank: the trainer must ignore it."""

    rank, size = 0, 1


class TwinRank:
    """Rank 0 of 2 whose twin sends exactly what it sends; records every collective."""

    rank, size = 0, 2

    def __init__(self):
        self.allreduce_sizes: list[int] = []
        self.broadcasts = 0

    def allreduce_sum_(self, buffer, what):
        self.allreduce_sizes.append(buffer.size)
        buffer *= 2

    def broadcast_(self, buffer, what, root=0):
        self.broadcasts += 1

    def broadcast_object(self, value, what, root=0):
        return value

    def gather_object(self, value, what, root=0):
        return [value, value]

    def abort(self, message, code=1):
        raise AssertionError(message)


def test_one_rank_trains_exactly_as_without_a_communicator(tmp_path):
    alone = cases.make_stateful(4, None, tmp_path / "alone", epochs=1)
    alone.fit()
    one = cases.make_stateful(4, OneRank(), tmp_path / "one", epochs=1)
    one.fit()
    assert one.comm is None
    for name, value in alone.model.state_dict().items():
        np.testing.assert_array_equal(one.model.state_dict()[name], value, err_msg=name)
    assert "distributed" not in checkpoint.read_extra(tmp_path / "one" / "checkpoint.npz")


def test_each_step_sends_one_flat_buffer_not_one_message_per_parameter(tmp_path):
    comm = TwinRank()
    trainer = cases.make_stateful(4, comm, tmp_path, epochs=1)
    trainer.fit()
    params = trainer.model.parameters()
    values = sum(p.data.size for p in params)
    assert comm.broadcasts == 1  # the parameters, once, at the start
    # every gradient, a has-gradient flag per parameter, the loss sum and the count
    assert comm.allreduce_sizes == [values + len(params) + 2] * trainer.step


def test_a_checkpoint_holds_the_global_carry_and_every_rank_rng(tmp_path):
    trainer = cases.make_stateful(4, TwinRank(), tmp_path, max_steps=3)
    trainer.fit()
    extra = checkpoint.read_extra(tmp_path / "checkpoint.npz")
    assert extra["distributed"]["world_size"] == 2
    assert len(extra["distributed"]["rng"]) == 2
    carried = checkpoint.load_arrays(tmp_path / "checkpoint.npz")["carried_0"]
    assert carried.shape == (1, 8, 12)  # (L, P x B, H): both lane groups
    local = trainer.carried.numpy()
    np.testing.assert_array_equal(carried, np.concatenate([local, local], axis=1))

    resumed = cases.make_stateful(4, TwinRank(), tmp_path, max_steps=3)
    resumed.resume(tmp_path)
    np.testing.assert_array_equal(resumed.carried.numpy(), local)  # its own lane group back
    with pytest.raises(ValueError, match="2 rank"):
        cases.make_stateful(4, None, tmp_path).resume(tmp_path)


# ---- real MPI processes ----------------------------------------------------------------
@pytest.fixture(scope="module")
def mpiexec() -> str:
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed: pip install 'tinygrad-rnn[mpi]' (mpi4py, mpich)")
    exe = find_mpiexec()
    if exe is None:
        pytest.skip("no mpiexec beside python or on PATH: pip install mpich")
    try:
        hello = subprocess.run([exe, "-n", "2", sys.executable, "-c", HELLO],
                               capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{exe} -n 2 hangs on a hello world")
    if hello.returncode != 0 or hello.stdout.count("ranks=2") != 2:
        tail = (hello.stdout + hello.stderr).strip()[-300:]
        pytest.skip(f"{exe} cannot start 2 ranks here (exit {hello.returncode}): {tail}")
    return exe


def _env(backend_name: str) -> dict[str, str]:
    # One BLAS thread per rank: two ranks on two cores.
    return {**os.environ, "PYTHONPATH": str(REPO), "TINYGRAD_RNN_BACKEND": backend_name,
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "MPLBACKEND": "Agg"}


def _launch(mpiexec, backend_name, *command, launcher=(), timeout=90):
    started = time.perf_counter()
    done = subprocess.run([mpiexec, *launcher, "-n", "2", *command], capture_output=True,
                          text=True, timeout=timeout, env=_env(backend_name), cwd=REPO)
    return done, time.perf_counter() - started


def _run_case(mpiexec, backend_name, case, out, *extra, launcher=()):
    return _launch(mpiexec, backend_name, sys.executable, str(SCRIPT), case, str(out), *extra,
                   launcher=launcher)


@pytest.mark.parametrize("case", ["stateless", "stateful"])
def test_two_ranks_at_batch_b_end_like_one_rank_at_batch_2b(mpiexec, backend_name, tmp_path,
                                                            case):
    done, _ = _run_case(mpiexec, backend_name, case, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rank0, rank1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    make = cases.make_stateless if case == "stateless" else cases.make_stateful
    reference = make(2 * cases.PER_RANK_BATCH[case])  # one process, same data order, same clip
    reference.fit()
    for name, value in reference.model.state_dict().items():
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)  # equal replicas
        np.testing.assert_allclose(rank0[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


def test_distributed_resume_mid_epoch_ends_with_the_same_weights(mpiexec, backend_name,
                                                                 tmp_path):
    done, _ = _run_case(mpiexec, backend_name, "resume", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for rank in (0, 1):
        full = np.load(tmp_path / f"full_rank{rank}.npz")
        resumed = np.load(tmp_path / f"resumed_rank{rank}.npz")
        for name in full.files:
            np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)
    rng = checkpoint.read_extra(tmp_path / "cut" / "checkpoint.npz")["distributed"]["rng"]
    assert rng[0] != rng[1]  # each rank draws its own dropout masks


def test_cli_distributed_run_writes_and_prints_from_rank_0_only(mpiexec, backend_name,
                                                                 tmp_path):
    out = tmp_path / "run"
    done, _ = _launch(mpiexec, backend_name, sys.executable, "-m", "tinygrad_rnn.cli", "train",
                      "sine", "--distributed", "--max-steps", "4", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1 and reports[0]["steps"] == 4
    assert done.stderr.count("training sine") == 1
    assert {"checkpoint.npz", "metrics.json", "curves.png"} <= {p.name for p in out.iterdir()}
    extra = checkpoint.read_extra(out / "checkpoint.npz")
    assert extra["distributed"]["world_size"] == 2 and extra["config"]["batch_size"] == 32


@pytest.mark.parametrize("refusal", ["run-in-use", "runs-is-a-file"])
def test_a_run_directory_refused_on_rank_0_ends_every_rank_at_once(mpiexec, backend_name,
                                                                   tmp_path, refusal):
    """Rank 0 alone claims and locks the run directory; its refusal reaches the other
    ranks, which waited in a collective for the whole MPI timeout before."""
    command = [sys.executable, "-m", "tinygrad_rnn.cli", "train"]
    if refusal == "run-in-use":
        out = tmp_path / "run"
        out.mkdir()
        command += ["sine", "--distributed", "--out", str(out), "--max-steps", "2"]
        holder = open(out / ".lock", "a")  # another process's run: the lock is taken
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        expected = "is in use"
    else:
        (tmp_path / "runs").write_text("a file where the runs folder would go")
        command = ["/bin/sh", "-c", f"cd {tmp_path} && exec " + " ".join(
            [*command, "sine", "--distributed", "--max-steps", "2"])]  # fmt: skip
        expected = "cannot make the run directory"
    env_timeout = {"TINYGRAD_RNN_MPI_TIMEOUT": "60"}
    os.environ.update(env_timeout)
    try:
        done, seconds = _launch(mpiexec, backend_name, *command)
    finally:
        os.environ.pop("TINYGRAD_RNN_MPI_TIMEOUT")
    assert done.returncode != 0
    assert done.stderr.count(expected) == 2, done.stderr[-2000:]  # every rank says why
    assert seconds < 30


def test_a_rank_that_dies_ends_the_job_with_a_clear_error_within_the_timeout(
    mpiexec, backend_name, tmp_path
):
    version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True).stdout
    if "HYDRA" not in version:
        pytest.skip("needs MPICH's mpiexec (hydra) to keep the survivors alive")
    # Without auto-cleanup the launcher leaves rank 0 running: only our deadline can end it.
    done, seconds = _run_case(mpiexec, backend_name, "die", tmp_path, "--timeout", "3",
                              launcher=("-disable-auto-cleanup",))
    assert done.returncode != 0
    assert seconds < 3 + 30
    assert "rank 0 of 2 waited 3 s for the gradient allreduce of step 3" in done.stderr
    assert "another rank has died or stalls" in done.stderr


def test_a_rank_that_dies_under_the_default_launcher_ends_the_job_at_once(
    mpiexec, backend_name, tmp_path
):
    done, seconds = _run_case(mpiexec, backend_name, "die", tmp_path, "--timeout", "60")
    assert done.returncode != 0
    assert seconds < 30  # the launcher's own cleanup, well before the 60 s deadline


def test_a_rank_that_raises_aborts_every_rank_and_names_the_error(mpiexec, backend_name,
                                                                  tmp_path):
    done, seconds = _run_case(mpiexec, backend_name, "raise", tmp_path, "--timeout", "60")
    assert done.returncode != 0
    assert seconds < 30
    assert "rank 1 failed: RuntimeError: injected failure in the loss" in done.stderr
    assert "which it should not have" not in done.stderr
