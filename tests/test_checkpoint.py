"""Checkpoints: round trips, atomic writes, ties, and clear errors for bad files.

A checkpoint is an .npz read with allow_pickle=False. Loading validates
everything before writing, so a bad file leaves the model and optimizer as
they were.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import to_host

import tinygrad_rnn as tr
from tinygrad_rnn import checkpoint, nn, optim
from tinygrad_rnn.checkpoint import CheckpointError
from tinygrad_rnn.nn import functional as F


def host(a):
    """A NumPy copy of a Tensor or a raw NumPy/CuPy array (such as `.grad`)."""
    return to_host(a if isinstance(a, tr.Tensor) else tr.Tensor(a))


REPO = Path(__file__).resolve().parents[1]


class TinyLM(nn.Module):
    """Embedding -> Linear -> tied decoder: a tie and three distinct shapes."""

    def __init__(self, vocab=11, dim=4, dtype=np.float32, seed=0, tie=True):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embedding = nn.Embedding(vocab, dim, dtype=dtype, generator=rng)
        self.hidden = nn.Linear(dim, dim, dtype=dtype, generator=rng)
        self.decoder = nn.Linear(dim, vocab, dtype=dtype, generator=rng)
        if tie:
            self.decoder.weight = self.embedding.weight

    def forward(self, ids):
        return self.decoder(self.hidden(self.embedding(ids)).tanh())


IDS = np.array([[1, 2, 3, 2], [4, 10, 0, 1]])


def _train(model, opt, steps=2):
    for _ in range(steps):
        opt.zero_grad()
        F.softmax_cross_entropy(model(IDS), IDS).backward()
        opt.step()


def _host_state(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == b[key].dtype


def _assert_same_optimizer_state(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index in a["state"]:
        for key, value in a["state"][index].items():
            np.testing.assert_array_equal(value, b["state"][index][key])


# ---- round trips --------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: optim.Adam(p, lr=0.01),
        lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: optim.AdaGrad(p, lr=0.1),
        lambda p: optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
    ],
    ids=["adam", "sgd", "adagrad", "rmsprop"],
)
def test_round_trip_restores_model_optimizer_and_extra(tmp_path, dtype, make_optimizer):
    model = TinyLM(dtype=dtype, seed=0)
    opt = make_optimizer(model.parameters())
    _train(model, opt)
    extra = {"config": {"hidden": 4, "lr": 0.01}, "vocab": ["<unk>", "the", "ä"], "epoch": 3}
    path = tmp_path / "model.npz"
    tr.save(path, model, opt, extra=extra)

    restored = TinyLM(dtype=dtype, seed=1)
    restored_opt = make_optimizer(restored.parameters())
    assert tr.load(path, restored, restored_opt) == extra
    _assert_same_state(_host_state(model), _host_state(restored))
    _assert_same_optimizer_state(opt.state_dict(), restored_opt.state_dict())
    assert restored.decoder.weight is restored.embedding.weight
    # Training continues exactly as if never interrupted.
    _train(model, opt)
    _train(restored, restored_opt)
    _assert_same_state(_host_state(model), _host_state(restored))


def test_the_file_is_a_plain_npz_without_pickle(tmp_path):
    model = TinyLM()
    opt = optim.Adam(model.parameters())
    _train(model, opt, steps=1)
    path = tmp_path / "model.npz"
    tr.save(path, model, opt)
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
        meta = json.loads(archive["__meta__"].tobytes())
    assert {"param/embedding.weight", "param/hidden.weight", "param/decoder.bias"} <= keys
    assert "param/decoder.weight" not in keys  # a tied parameter is stored once
    assert "optim/state/0/exp_avg" in keys
    assert meta["format"] == checkpoint.FORMAT and meta["version"] == checkpoint.VERSION
    assert meta["tied"] == {"decoder.weight": "embedding.weight"}
    assert meta["params"]["hidden.weight"] == {"shape": [4, 4], "dtype": "float32"}
    assert meta["optimizer"]["type"] == "Adam"
    assert meta["extra"] is None
    assert tr.load(path, TinyLM(seed=3)) == {}  # no optimizer passed: its state is ignored


def test_extra_arrays_round_trip(tmp_path):
    model = TinyLM()
    state = np.arange(6, dtype=np.float32).reshape(2, 3)
    tr.save(tmp_path / "m.npz", model, arrays={"carried_0": state, "t": tr.tensor(state)})
    loaded = checkpoint.load_arrays(tmp_path / "m.npz")
    assert sorted(loaded) == ["carried_0", "t"]
    np.testing.assert_array_equal(loaded["carried_0"], state)


def test_a_tied_checkpoint_loads_into_an_untied_model(tmp_path):
    tr.save(tmp_path / "m.npz", TinyLM(seed=0, tie=True))
    untied = TinyLM(seed=1, tie=False)
    tr.load(tmp_path / "m.npz", untied)
    np.testing.assert_array_equal(host(untied.decoder.weight), host(untied.embedding.weight))
    assert untied.decoder.weight is not untied.embedding.weight


def test_an_untied_checkpoint_does_not_load_into_a_tied_model(tmp_path):
    tr.save(tmp_path / "m.npz", TinyLM(seed=0, tie=False))
    with pytest.raises(CheckpointError, match="'decoder.weight' is stored on its own"):
        tr.load(tmp_path / "m.npz", TinyLM(seed=1, tie=True))


@pytest.mark.cupy
def test_a_numpy_checkpoint_loads_onto_cupy_and_back(tmp_path):
    model = TinyLM().to("numpy")
    opt = optim.Adam(model.parameters())
    _train(model, opt, steps=1)
    tr.save(tmp_path / "m.npz", model, opt)
    gpu_model = TinyLM(seed=2).to("cupy")
    gpu_opt = optim.Adam(gpu_model.parameters())
    tr.load(tmp_path / "m.npz", gpu_model, gpu_opt)
    assert all(p.backend == "cupy" for p in gpu_model.parameters())
    assert all(e["exp_avg"].__class__.__module__.startswith("cupy") for e in gpu_opt.state.values())
    _assert_same_state(_host_state(model), _host_state(gpu_model))
    tr.save(tmp_path / "g.npz", gpu_model, gpu_opt)
    back = TinyLM(seed=3).to("numpy")
    tr.load(tmp_path / "g.npz", back)
    _assert_same_state(_host_state(model), _host_state(back))


# ---- atomic writes ------------------------------------------------------------
def _temp_files(directory):
    return [p for p in os.listdir(directory) if p.endswith(".tmp")]


def test_a_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = TinyLM(seed=0)
    tr.save(path, old)

    def broken(zf, key, array):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_member", broken)
    with pytest.raises(OSError, match="disk full"):
        tr.save(path, TinyLM(seed=1))
    monkeypatch.undo()
    with pytest.raises(TypeError, match="JSON-able"):
        tr.save(path, TinyLM(seed=1), extra={"bad": object()})
    assert _temp_files(tmp_path) == []
    restored = TinyLM(seed=2)
    tr.load(path, restored)
    _assert_same_state(_host_state(old), _host_state(restored))


def test_a_save_never_removes_the_temp_file_of_a_checkpoint_with_a_longer_name(tmp_path):
    """The temp file of a live save of "run.<n>.npz" is no stale temp of "run", however
    its pid-like part reads (here the pid of an ended process)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(gone.stdout)  # a process that has ended
    live = tmp_path / f".run.{dead_pid}.npz.{os.getpid()}.0123abcd.tmp"
    live.write_bytes(b"half a checkpoint")
    dead = tmp_path / f".run.{dead_pid}.0123abcd.tmp"  # a killed writer of "run" itself
    dead.write_bytes(b"left behind")
    tr.save(tmp_path / "run", TinyLM(seed=0))
    assert live.exists() and not dead.exists()


def test_a_save_into_a_missing_folder_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"save: no folder {tmp_path / 'nodir'} to"):
        tr.save(tmp_path / "nodir" / "m.npz", TinyLM(seed=0))


def test_an_extra_with_non_string_keys_is_refused_naming_the_key(tmp_path):
    """JSON would hand {0: "a"} back as {"0": "a"}: refused, not silently changed."""
    with pytest.raises(TypeError, match=r"extra\['vocab'\] has the key 0 \(int\)"):
        tr.save(tmp_path / "m.npz", TinyLM(seed=0), extra={"vocab": {0: "a", 1: "b"}})
    assert not (tmp_path / "m.npz").exists() and _temp_files(tmp_path) == []


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from tinygrad_rnn import checkpoint, nn

    path, marker = sys.argv[1], sys.argv[2]
    model = nn.Module()
    model.big = nn.Linear(1024, 2048, generator=np.random.default_rng(1))
    model.small = nn.Linear(8, 8, generator=np.random.default_rng(2))
    write_member = checkpoint._write_member

    def slow_write_member(zf, key, array):
        write_member(zf, key, array)
        open(marker, "w").close()  # one member is on disk: tell the parent, then hang
        time.sleep(120)

    checkpoint._write_member = slow_write_member
    checkpoint.save(path, model)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_a_writer_killed_mid_save_leaves_the_previous_checkpoint_intact(tmp_path):
    class Model(nn.Module):
        def __init__(self, seed):
            super().__init__()
            self.big = nn.Linear(1024, 2048, generator=np.random.default_rng(seed))
            self.small = nn.Linear(8, 8, generator=np.random.default_rng(seed + 1))

    path = tmp_path / "model.npz"
    marker = tmp_path / "writing"
    old = Model(seed=10)
    tr.save(path, old)
    old_bytes = path.read_bytes()

    env = {**os.environ, "PYTHONPATH": str(REPO), "TINYGRAD_RNN_BACKEND": "numpy"}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path), str(marker)], env=env, cwd=REPO
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the writer exited before it started writing"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.05)
        temps = _temp_files(tmp_path)
        assert len(temps) == 1 and (tmp_path / temps[0]).stat().st_size > 8_000_000
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    assert path.read_bytes() == old_bytes
    restored = Model(seed=20)
    tr.load(path, restored)
    _assert_same_state(_host_state(old), _host_state(restored))
    # The dead writer's temp file is swept by the next save of the same path.
    tr.save(path, restored)
    assert _temp_files(tmp_path) == []


# ---- bad files ----------------------------------------------------------------
def test_a_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes\.txt.*not a readable \.npz"):
        tr.load(path, TinyLM())


def test_a_plain_npz_without_the_marker_is_refused(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, **{"param/embedding.weight": np.zeros((11, 4), np.float32)})
    with pytest.raises(CheckpointError, match=r"plain\.npz.*format marker"):
        tr.load(path, TinyLM())
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="single .npy array"):
        tr.load(tmp_path / "one.npy", TinyLM())


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    tr.save(path, TinyLM(), optim.Adam(TinyLM().parameters()))
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"m\.npz"):
            tr.load(path, TinyLM())


def test_a_damaged_member_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    tr.save(path, TinyLM())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("param/hidden.weight.npy")
        offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF  # flip bits inside the array's bytes: the CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="hidden.weight"):
        tr.load(path, TinyLM())


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        tr.load(tmp_path / "nothing.npz", TinyLM())


# ---- mismatches leave everything untouched -----------------------------------
def test_a_shape_mismatch_names_key_and_shapes_and_changes_nothing(tmp_path):
    path = tmp_path / "m.npz"
    saved = TinyLM(vocab=11, dim=4)
    saved_opt = optim.Adam(saved.parameters())
    _train(saved, saved_opt, steps=1)
    tr.save(path, saved, saved_opt)
    target = TinyLM(vocab=11, dim=5, seed=7)
    target_opt = optim.Adam(target.parameters())
    _train(target, target_opt, steps=1)
    before, before_opt = _host_state(target), target_opt.state_dict()
    with pytest.raises(
        CheckpointError,
        match=r"m\.npz.*'param/embedding.weight' has shape \(11, 4\); the module expects \(11, 5\)",
    ):
        tr.load(path, target, target_opt)
    _assert_same_state(before, _host_state(target))
    _assert_same_optimizer_state(before_opt, target_opt.state_dict())


def test_dtype_and_name_mismatches_are_named(tmp_path):
    path = tmp_path / "m.npz"
    tr.save(path, TinyLM(dtype=np.float64))
    with pytest.raises(CheckpointError, match="dtype float64; the module expects float32"):
        tr.load(path, TinyLM(dtype=np.float32))

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)

    with pytest.raises(CheckpointError, match=r"missing \['layer.weight', 'layer.bias'\]"):
        tr.load(path, Other())


def test_optimizer_mismatches_are_refused_before_the_model_changes(tmp_path):
    path = tmp_path / "m.npz"
    model = TinyLM(seed=0)
    tr.save(path, model, optim.SGD(model.parameters(), lr=0.1))
    target = TinyLM(seed=1)
    before = _host_state(target)
    with pytest.raises(CheckpointError, match="holds SGD state; cannot load it into a Adam"):
        tr.load(path, target, optim.Adam(target.parameters()))
    tr.save(path, model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        tr.load(path, target, optim.Adam(target.parameters()))
    _assert_same_state(before, _host_state(target))


def test_a_checkpoint_of_a_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    tr.save(path, TinyLM(seed=0))
    with np.load(path) as stored:
        members = {k: stored[k] for k in stored.files}
    meta = json.loads(members["__meta__"].tobytes().decode("utf-8"))
    meta["version"] = checkpoint.VERSION + 1
    members["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **members)
    with pytest.raises(CheckpointError, match=f"format version {checkpoint.VERSION + 1} is not"):
        tr.load(path, TinyLM(seed=1))


def test_a_save_is_on_disk_before_it_replaces_the_old_checkpoint(tmp_path, monkeypatch):
    calls = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (calls.append("fsync"), fsync(fd)))
    monkeypatch.setattr(checkpoint.os, "replace",
                        lambda a, b: (calls.append("replace"), replace(a, b)))  # fmt: skip
    tr.save(tmp_path / "m.npz", TinyLM(seed=0))
    assert calls[:2] == ["fsync", "replace"]


# ---- mutation audit (s7) ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["tied", "optimizer", "extra"])
def test_a_metadata_entry_of_the_wrong_kind_is_refused_naming_it(tmp_path, key):
    """A tampered 'tied' map (a list, say) was read as "no ties": a tied model then got
    its decoder from no stored key, or silently untied. Each of the three entries must be
    a dict or null; only 'extra' was tried (through the CLI), so dropping 'tied' from the
    check passed."""
    path = tmp_path / "m.npz"
    tr.save(path, TinyLM(seed=0))
    with np.load(path) as stored:
        members = {k: stored[k] for k in stored.files}
    meta = json.loads(members["__meta__"].tobytes().decode("utf-8"))
    meta[key] = [["decoder.weight", "embedding.weight"]]
    members["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **members)
    model = TinyLM(seed=1)
    before = _host_state(model)
    with pytest.raises(CheckpointError, match=f"the metadata's '{key}' must be a dict or null; "
                                              "got list"):  # fmt: skip
        tr.load(path, model)
    _assert_same_state(before, _host_state(model))
