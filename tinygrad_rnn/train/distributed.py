"""Data-parallel training over processes with MPI: one model replica per rank.

    mpirun -n 4 tinygrad-rnn train ptb --distributed
    trainer = Trainer(topology, model, config, train, valid, communicator=MPICommunicator())

Every rank holds the whole model and reads its own shard of each global batch:

- stateless windows: global batch k is the batch k that a single process would read at batch
  size P x B (same seed, same permutation, last incomplete global batch dropped); rank r takes
  rows ``[r*B, (r+1)*B)`` of it (`ShardedLoader`);
- stateful streams: the global batcher has P x B lanes; rank r reads the lane group
  ``lane_range(P*B, r, P)``, with the global batcher's lane offsets.

Each step the ranks sum one flat buffer (every gradient, a has-gradient flag per parameter, the
loss sum and the scored-item count) with a single allreduce, then divide by the global count:
the gradient of the global mean loss, the same one a single process gets at batch P x B.
Clipping and the optimizer step follow, identically on every rank, so the replicas stay equal.

Every collective waits with a deadline (`MPICommunicator.timeout`): a rank that died or stalls
makes the others print what they were waiting for and end the whole job with MPI_Abort instead
of hanging.
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..backend import get_array_module
from ..data import DataLoader, StatefulBatcher, lane_range
from ..random import set_rng_state
from ..tensor import Tensor

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "GradientAllreduce",
    "MPICommunicator",
    "ShardedLoader",
    "broadcast_parameters",
    "find_mpiexec",
    "gather_rank_states",
    "make_train_loader",
    "rank_loader_state",
    "rank_slice",
    "seed_rank_generator",
    "state_batch_axis",
]

DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "TINYGRAD_RNN_MPI_TIMEOUT"
_SPIN_S = 5e-3  # poll flat out this long, then yield the core between polls
_NAP_S = 1e-4
_ABORT_GRACE_S = 0.5  # seconds between printing why and MPI_Abort


# ---- the transport -------------------------------------------------------------------
class MPICommunicator:
    """MPI's COMM_WORLD (or `comm`) with a deadline on every collective.

    Args:
        comm: an mpi4py communicator; default ``MPI.COMM_WORLD``.
        timeout: seconds a rank waits in one collective before it gives up; default
            ``$TINYGRAD_RNN_MPI_TIMEOUT`` or 300. It must cover the longest skew between
            ranks (rank 0 writing a checkpoint while the others wait at the next step).

    Collectives are non-blocking MPI calls polled until done. Past the deadline, or on an MPI
    error, the rank prints what it was waiting for and calls MPI_Abort, which ends every rank:
    a dead peer never leaves the job hanging. Buffers are host NumPy arrays.
    """

    def __init__(self, comm: Any = None, timeout: float | None = None):
        try:
            from mpi4py import MPI
        except ImportError as err:
            raise ImportError(
                "distributed training needs mpi4py and an MPI library: "
                "pip install 'tinygrad-rnn[mpi]' (mpi4py, mpich)"
            ) from err
        self._mpi = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        # Ranks sharing this machine (its memory): they share its CPUs too.
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size: int = local.Get_size()
        local.Free()
        if timeout is None:
            text = os.environ.get(TIMEOUT_ENV, "").strip()
            try:
                timeout = float(text) if text else DEFAULT_TIMEOUT_S
            except ValueError:
                timeout = math.nan  # refused below, naming the variable
            if not (math.isfinite(timeout) and timeout > 0):
                raise ValueError(
                    f"${TIMEOUT_ENV} must be a number of seconds > 0; got {text!r}"
                )
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds; got {timeout}")
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"MPICommunicator(rank={self.rank}, size={self.size}, timeout={self.timeout:g})"

    def allreduce_sum_(self, buffer: np.ndarray, what: str) -> None:
        """Sum `buffer` over all ranks, in place. `what` names it in a timeout message."""
        self._wait(self.comm.Iallreduce(self._mpi.IN_PLACE, buffer, self._mpi.SUM), what)

    def broadcast_(self, buffer: np.ndarray, what: str, root: int = 0) -> None:
        """Overwrite `buffer` on every rank with root's, in place."""
        self._wait(self.comm.Ibcast(buffer, root=root), what)

    def broadcast_object(self, value: Any, what: str, root: int = 0) -> Any:
        """Root's `value` (any picklable object) on every rank."""
        payload = _pickled(value) if self.rank == root else np.empty(0, np.uint8)
        size = np.array([payload.size], dtype=np.int64)
        self.broadcast_(size, what, root)
        if self.rank != root:
            payload = np.empty(int(size[0]), np.uint8)
        self.broadcast_(payload, what, root)
        return pickle.loads(payload.tobytes())

    def gather_object(self, value: Any, what: str, root: int = 0) -> list[Any] | None:
        """Every rank's `value`, in rank order, on root; None on the other ranks."""
        payload = _pickled(value)
        sizes = np.zeros(self.size, dtype=np.int64)
        self._wait(self.comm.Igather(np.array([payload.size], np.int64), sizes, root=root), what)
        if self.rank != root:
            self._wait(self.comm.Igatherv(payload, None, root=root), what)
            return None
        received = np.empty(int(sizes.sum()), np.uint8)
        self._wait(self.comm.Igatherv(payload, [received, sizes], root=root), what)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        return [pickle.loads(received[a:b].tobytes()) for a, b in zip(bounds[:-1], bounds[1:])]

    def abort(self, message: str, code: int = 1) -> NoReturn:
        """Print `message` on stderr and end every rank of the job (MPI_Abort)."""
        print(f"tinygrad-rnn distributed: {message}", file=sys.stderr, flush=True)
        # The launcher forwards a rank's stderr through its proxy, asynchronously; MPI_Abort
        # tears the proxies down, and on a loaded machine that lost the message (seen once
        # in CI: exit 1, empty stderr). A moment's grace lets it through.
        time.sleep(_ABORT_GRACE_S)
        self.comm.Abort(code)
        os._exit(code)  # MPI_Abort does not return; never carry on past it regardless

    def _wait(self, request: Any, what: str) -> None:
        started = time.perf_counter()
        try:
            while not request.Test():
                waited = time.perf_counter() - started
                if waited > self.timeout:
                    self.abort(
                        f"rank {self.rank} of {self.size} waited {self.timeout:g} s for {what}; "
                        "another rank has died or stalls. Aborting all ranks. (The limit is "
                        f"${TIMEOUT_ENV} or MPICommunicator(timeout=...).)"
                    )
                if waited > _SPIN_S:
                    time.sleep(_NAP_S)
        except self._mpi.Exception as err:
            self.abort(
                f"rank {self.rank} of {self.size}: {what} failed ({err}); another rank has "
                "probably died. Aborting all ranks."
            )


def _pickled(value: Any) -> np.ndarray:
    return np.frombuffer(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)


def find_mpiexec() -> str | None:
    """The `mpiexec` of this Python environment (the mpich wheel puts it beside python)."""
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = folder / "mpiexec"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("mpiexec") or shutil.which("mpirun")


# ---- parameters and gradients ----------------------------------------------------------
def _unique(params: list[Tensor]) -> list[Tensor]:
    seen: set[int] = set()
    return [p for p in params if not (id(p) in seen or seen.add(id(p)))]


def _array_module(params: list[Tensor]) -> Any:
    modules = {get_array_module(p.data) for p in params}
    if len(modules) != 1:
        raise ValueError(
            f"distributed training needs every parameter on one backend; got {len(modules)}"
        )
    return modules.pop()


def _layout(params: list[Tensor]) -> tuple[np.dtype, list[tuple[int, int]]]:
    """The flat buffer's dtype (wide enough for every parameter) and each parameter's slice."""
    dtype = np.result_type(*[p.dtype for p in params])
    bounds = np.concatenate([[0], np.cumsum([p.data.size for p in params])])
    return dtype, [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def broadcast_parameters(params: list[Tensor], comm: MPICommunicator) -> None:
    """Copy rank 0's parameter values to every rank, in place, as one flat buffer."""
    params = _unique(list(params))
    xp = _array_module(params)
    dtype, slices = _layout(params)
    host = np.empty(slices[-1][1], dtype=dtype)
    if comm.rank == 0:
        for p, (a, b) in zip(params, slices):
            host[a:b] = p.numpy().reshape(-1)
    comm.broadcast_(host, "the parameter broadcast from rank 0")
    for p, (a, b) in zip(params, slices):
        p.data[...] = xp.asarray(host[a:b].reshape(p.shape), dtype=p.dtype)


class GradientAllreduce:
    """Average gradients and the loss over ranks with one allreduce of one flat buffer.

    Buffer layout (G = number of gradient values, K = number of parameters):
    ``[count * grads (G) | has-gradient flags (K) | loss * count | count]``. Each rank weights
    its gradient by its scored-item count and the sum is divided by the global count, which is
    the gradient of the global mean loss; with equal shards this is the plain mean over ranks
    (divide by P). A parameter with no gradient on any rank keeps ``grad = None``.

    With CuPy the buffer is packed on the device, copied to the host once, reduced there (plain
    MPI needs host memory) and copied back once: two transfers of 4 bytes per parameter a step.
    The buffers are allocated once and reused.
    """

    def __init__(self, params: list[Tensor], comm: MPICommunicator):
        self.params = _unique(list(params))
        self.comm = comm
        self.xp = _array_module(self.params)
        dtype, self.slices = _layout(self.params)
        self.num_values = self.slices[-1][1]
        self.flags_at = self.num_values
        self.loss_at = self.flags_at + len(self.params)
        self.count_at = self.loss_at + 1
        self.host = np.empty(self.count_at + 1, dtype=dtype)
        self.device = self.host if self.xp is np else self.xp.empty(self.host.shape, dtype=dtype)

    @property
    def nbytes(self) -> int:
        """Bytes sent into the allreduce each step."""
        return self.host.nbytes

    def __call__(self, loss: float, count: int, what: str) -> tuple[float, int]:
        """Replace every `.grad` by the global average; return (global mean loss, global count)."""
        xp, buf = self.xp, self.device
        for i, (p, (a, b)) in enumerate(zip(self.params, self.slices)):
            if p.grad is None:
                buf[a:b] = 0
                buf[self.flags_at + i] = 0
            else:
                xp.multiply(p.grad.reshape(-1), count, out=buf[a:b])
                buf[self.flags_at + i] = 1
        buf[self.loss_at] = loss * count
        buf[self.count_at] = count
        if buf is not self.host:
            buf.get(out=self.host)
        self.comm.allreduce_sum_(self.host, what)
        if buf is not self.host:
            buf.set(self.host)
        total = float(self.host[self.count_at])
        scale = 1.0 / total
        for i, (p, (a, b)) in enumerate(zip(self.params, self.slices)):
            if self.host[self.flags_at + i] == 0:
                continue
            summed = buf[a:b].reshape(p.shape)
            if p.grad is None:
                p.grad = (summed * scale).astype(p.dtype)
            else:
                xp.multiply(summed, scale, out=p.grad)
        return float(self.host[self.loss_at]) * scale, int(round(total))


def seed_rank_generator(seed: int, rank: int) -> None:
    """Give this rank its own stream for dropout and sampling: child `rank` of SeedSequence(seed).

    Replicas that drew the same dropout masks on different data would waste the noise.
    """
    sequence = np.random.SeedSequence(int(seed), spawn_key=(int(rank),))
    set_rng_state(np.random.default_rng(sequence).bit_generator.state)


# ---- data shards -----------------------------------------------------------------------
class ShardedLoader:
    """This rank's rows of each global batch of P x B independent samples.

    Global batch k is exactly batch k of ``DataLoader(X, Y, P * B, shuffle, drop_last=True,
    seed)``: the same permutation on every rank (hence the shared seed), cut into global batches,
    the last incomplete one dropped so every rank gets B samples each step. Rank r takes rows
    ``[r*B, (r+1)*B)``. Stacking the ranks' batches in rank order gives the single-process batch
    at batch size P x B, so a P-rank run reads the data in the order of that run.

    Args:
        X: (N, ...) inputs.
        Y: (N, ...) targets, paired with X.
        batch_size: B, samples per rank and step.
        rank: this rank, in [0, P).
        world_size: P, the number of ranks.
        shuffle: a fresh permutation each epoch.
        seed: the permutation seed, the same on every rank.

    The position (state_dict) is that of the global loader, the same on every rank.
    """

    def __init__(
        self,
        X: Any,
        Y: Any,
        batch_size: int,
        rank: int,
        world_size: int,
        shuffle: bool = True,
        seed: int | None = None,
    ):
        self.X = np.asarray(X)
        self.Y = np.asarray(Y)
        n = self.X.shape[0]
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}); got {self.rank}")
        global_batch = self.batch_size * self.world_size
        if n < global_batch:
            raise ValueError(
                f"train: {n} samples make no full global batch of world_size x batch_size = "
                f"{self.world_size} x {self.batch_size} = {global_batch}"
            )
        indices = np.arange(n)
        self.global_loader = DataLoader(
            indices, indices, global_batch, shuffle=shuffle, drop_last=True, seed=seed
        )

    def __len__(self) -> int:
        return len(self.global_loader)

    def __iter__(self):
        # iter() sets the epoch up at once (fresh, or the resumed position), as a
        # DataLoader's does: the trainer reads the position right after it.
        batches = iter(self.global_loader)
        rows = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return ((self.X[index[rows]], self.Y[index[rows]]) for index, _ in batches)

    def state_dict(self) -> dict[str, Any]:
        return self.global_loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_loader.load_state_dict(state)


def make_train_loader(stateful: bool, data: Any, config: Any, rank: int, world_size: int) -> Any:
    """This rank's training batches; `config.batch_size` is the per-rank batch B."""
    B = config.batch_size
    if stateful:
        lanes = lane_range(B * world_size, rank, world_size)
        return StatefulBatcher(data, B * world_size, config.time_size, lanes=lanes)
    X, Y = data
    shuffle = True if config.shuffle is None else config.shuffle
    return ShardedLoader(X, Y, B, rank, world_size, shuffle=shuffle, seed=config.seed + 1)


def rank_loader_state(state: dict[str, Any], loader: Any) -> dict[str, Any]:
    """The saved (rank 0's) loader position, made this rank's: its own lane group."""
    if "lanes" in state and hasattr(loader, "lanes"):
        return {**state, "lanes": list(loader.lanes)}
    return state


# ---- carried state in checkpoints ------------------------------------------------------
def state_batch_axis(topology: Any) -> int:
    """The batch axis of a carried state: 1 in the (L * dirs, N, H) layout of nn's layers.

    A stateful plugin with another layout sets ``state_batch_axis`` on its topology.
    """
    return int(getattr(topology, "state_batch_axis", 1))


def gather_rank_states(
    comm: MPICommunicator, carried: list[np.ndarray], rng_state: dict, axis: int, what: str
) -> tuple[list[np.ndarray], list[dict]] | None:
    """On rank 0: the global carried state (the lane groups concatenated along `axis`) and
    every rank's RNG state; None on the other ranks."""
    gathered = comm.gather_object({"carried": carried, "rng": rng_state}, what)
    if gathered is None:
        return None
    parts = [g["carried"] for g in gathered]
    joined = [np.concatenate([p[i] for p in parts], axis=axis) for i in range(len(carried))]
    return joined, [g["rng"] for g in gathered]


def rank_slice(
    arrays: list[np.ndarray], rank: int, world_size: int, axis: int
) -> list[np.ndarray]:
    """This rank's lane group of each global carried state array."""
    out = []
    for a in arrays:
        per_rank = a.shape[axis] // world_size
        index = [slice(None)] * a.ndim
        index[axis] = slice(rank * per_rank, (rank + 1) * per_rank)
        out.append(np.ascontiguousarray(a[tuple(index)]))
    return out
