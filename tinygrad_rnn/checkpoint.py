"""Checkpoints: a model's parameters, an optimizer's state and a JSON dict in one `.npz`.

    tr.save("run/model.npz", model, optimizer, extra={"config": cfg, "vocab": words})
    extra = tr.load("run/model.npz", model, optimizer)

The file is a plain NumPy zip archive, readable with ``np.load(path,
allow_pickle=False)``; nothing in it is pickled. Members:

- ``param/<name>``: each parameter once, under its first dotted name (a tied
  parameter is stored once; the alias map is in the metadata);
- ``array/<name>``: the further arrays passed to `save(..., arrays=)`;
- ``optim/<path>``: the optimizer state dict's arrays, e.g. ``optim/state/0/exp_avg``;
- ``__meta__``: UTF-8 JSON as a uint8 array: the format marker and version,
  each parameter's shape and dtype, the tied-name map, the optimizer's type and
  scalars (with arrays replaced by ``{"__array__": "<member>"}``), and `extra`.

Saving is atomic: the archive is written to a temporary file in the same
directory, flushed and fsync-ed, then renamed over the target, so a crash
leaves either the old checkpoint or the new one. Loading checks everything
(format, names, shapes, dtypes, the optimizer state; finite weights when asked) before it
writes anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from .backend import to_host

__all__ = [
    "save", "load", "load_arrays", "read_extra", "write_atomically", "CheckpointError", "FORMAT",
    "VERSION",
]  # fmt: skip

FORMAT = "tinygrad-rnn-checkpoint"
VERSION = 1
_META = "__meta__"
_PARAM = "param/"
_ARRAYS = "array/"
_OPTIM = "optim"
_ARRAY_REF = "__array__"
_INT_KEYS = "__int_keys__"


class CheckpointError(ValueError):
    """A checkpoint file is damaged, foreign, or does not fit the model/optimizer."""


# ---- save ---------------------------------------------------------------------
def save(
    path: str | os.PathLike,
    module: Any,
    optimizer: Any = None,
    extra: dict | None = None,
    arrays: dict[str, Any] | None = None,
) -> None:
    """Write `module`'s parameters, `optimizer`'s state and `extra` to `path`, atomically.

    `extra` is a JSON-able dict (config, vocabulary, epoch, ...) that `load`
    returns. `arrays` holds further named arrays (a carried recurrent state,
    say), stored under ``array/<name>`` and read back with `load_arrays`. The
    file is written exactly at `path` (no suffix is added).
    """
    path = os.fspath(path)
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"save: extra must be a JSON-able dict or None; got {type(extra).__name__}")
    members: dict[str, np.ndarray] = {}
    for name, value in (arrays or {}).items():
        # to_host, not `.data`: a raw CuPy array's `.data` is a device pointer.
        members[_ARRAYS + name] = to_host(value)
        if members[_ARRAYS + name].dtype == object:
            raise TypeError(f"save: arrays[{name!r}] has dtype object, which needs pickle")
    arrays = members
    params_meta = {}
    for name, param in module.named_parameters():
        arrays[_PARAM + name] = param.numpy()
        params_meta[name] = {"shape": list(param.shape), "dtype": str(param.dtype)}
    optim_meta = None
    if optimizer is not None:
        state = _encode(optimizer.state_dict(), _OPTIM, arrays)
        optim_meta = {"type": type(optimizer).__name__, "state": state}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "params": params_meta,
        "tied": module.tied_names(),
        "optimizer": optim_meta,
        "extra": extra,
    }
    _check_string_keys(extra, "extra")
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as err:
        raise TypeError(f"save: extra must be JSON-able ({err})") from None
    arrays[_META] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    write_atomically(path, lambda file: _write_npz(file, arrays))


def _encode(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-able copy of a state tree; arrays move to `arrays` under their path."""
    if isinstance(value, dict):
        encoded = {str(k): _encode(v, f"{key}/{k}", arrays) for k, v in value.items()}
        if all(isinstance(k, str) for k in value):
            return encoded
        if all(isinstance(k, (int, np.integer)) for k in value):
            return {_INT_KEYS: encoded}
        raise TypeError(f"save: state dict keys at {key!r} mix types: {list(value)!r}")
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        arrays[key] = value.get() if hasattr(value, "get") else np.asarray(value)
        return {_ARRAY_REF: key}
    return value


def _check_string_keys(value: Any, where: str) -> None:
    """JSON turns a dict's int keys into strings: {0: "a"} would come back as {"0": "a"}
    and fail the lookups it served. Refused, naming the key, rather than changed."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"save: {where} has the key {key!r} ({type(key).__name__}); JSON keeps only "
                    "string keys, so it would come back as a string: use str keys"
                )
            _check_string_keys(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_string_keys(item, f"{where}[{index}]")


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file whole or not at all: `write(file)` fills a temp file beside `path`,
    which is synced and then renamed over it. A failure (a full disk, a Ctrl-C) leaves
    the old file as it was and removes the temp; temps of killed writers go at the next
    write. Checkpoints, metrics.json and the plots are all written this way."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    if not os.path.isdir(directory):  # named here: the temp file's name would be the error's
        raise FileNotFoundError(f"save: no folder {directory} to write {base} into")
    _remove_stale_temp_files(directory, base)
    temp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open, not mkstemp: the umask applies, so the file gets the usual permissions.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(directory)


def _write_npz(file: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz, like np.savez, but with pickling refused."""
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, array in arrays.items():
            _write_member(zf, key, array)


def _write_member(zf: zipfile.ZipFile, key: str, array: np.ndarray) -> None:
    with zf.open(key + ".npy", mode="w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def _remove_stale_temp_files(directory: str, base: str) -> None:
    """Delete temp files left by writers of `base` that were killed mid-save."""
    # Exactly `.{base}.{pid}.{8 hex}.tmp`: a save of "run.1.npz" beside "run" must not
    # be taken for a stale temp of "run" (its "1" read as a dead pid).
    pattern = re.compile(rf"\.{re.escape(base)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            match = pattern.fullmatch(entry)
            if match and not _process_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, entry))


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or we cannot tell: keep its file
    return True


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories can't be opened)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- load ---------------------------------------------------------------------
def load(
    path: str | os.PathLike, module: Any, optimizer: Any = None, require_finite: bool = False
) -> dict:
    """Load a checkpoint written by `save` into `module` (and `optimizer`); return `extra`.

    Parameters are copied into the module's existing buffers, so they keep
    their backend (NumPy or CuPy) and the module's own ties. Every name, shape
    and dtype is checked first (and with `require_finite`, that every float weight
    is finite, as resuming and evaluating need): on any mismatch a CheckpointError
    names the file, the key, and what was expected and received, and nothing is
    changed.
    Returns the saved `extra` dict ({} if none was saved).
    """
    path = os.fspath(path)
    arrays, meta = _read(path)

    values = _match_parameters(path, module, arrays, meta, require_finite)
    optim_state = None
    if optimizer is not None:
        optim_state = _optimizer_state(path, optimizer, arrays, meta)

    module.load_state_dict(values)
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    extra = meta.get("extra")
    return {} if extra is None else extra


def read_extra(path: str | os.PathLike) -> dict:
    """The `extra` dict of a checkpoint, without a module to load into.

    `evaluate` and `generate` read the config from here to rebuild the model.
    """
    path = os.fspath(path)
    _, meta = _read(path)
    extra = meta.get("extra")
    return {} if extra is None else extra


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays stored with `save(..., arrays=)`, by name, as host NumPy arrays."""
    path = os.fspath(path)
    stored, _ = _read(path)
    return {k[len(_ARRAYS) :]: v for k, v in stored.items() if k.startswith(_ARRAYS)}


def checkpoint_error(path: str | os.PathLike, message: str) -> CheckpointError:
    """The error for what is wrong with the checkpoint at `path`, naming the file."""
    return CheckpointError(f"checkpoint {os.fspath(path)!r}: {message}")


def _read(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All arrays and the parsed metadata, or CheckpointError saying what is wrong."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as err:  # not NumPy data (text, pickle), or a truncated zip
        raise checkpoint_error(
            path, f"not a readable .npz archive ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise checkpoint_error(path, "holds a single .npy array, not a checkpoint archive")
    with loaded:
        if _META not in loaded.files:
            raise checkpoint_error(
                path,
                f"missing the format marker ({_META!r}): an .npz archive, but not a "
                "tinygrad-rnn checkpoint",
            )
        arrays = {}
        for key in loaded.files:
            try:
                arrays[key] = loaded[key]
            except Exception as err:  # damaged member: bad CRC, cut short, ...
                raise checkpoint_error(
                    path, f"member {key!r} is damaged ({type(err).__name__}: {err})"
                ) from None
    raw = arrays.pop(_META)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise checkpoint_error(path, f"the metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise checkpoint_error(path, f"format marker is {found!r}; expected {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise checkpoint_error(
            path,
            f"format version {version!r} is not supported (this library reads "
            f"1 to {VERSION}; a newer tinygrad-rnn wrote it?)",
        )
    for key in ("params", "tied", "optimizer", "extra"):
        if key not in meta:
            raise checkpoint_error(path, f"the metadata misses {key!r}")
    for key, kind in (("extra", dict), ("optimizer", dict), ("tied", dict)):
        if meta[key] is not None and not isinstance(meta[key], kind):
            raise checkpoint_error(
                path,
                f"the metadata's {key!r} must be a {kind.__name__} or null; got "
                f"{type(meta[key]).__name__}",
            )
    return arrays, meta


def _match_parameters(
    path: str,
    module: Any,
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    require_finite: bool = False,
) -> dict[str, np.ndarray]:
    """The array for each of the module's parameters, checked for name, shape and dtype."""
    stored = {k[len(_PARAM) :]: v for k, v in arrays.items() if k.startswith(_PARAM)}
    stored_ties = meta["tied"] if isinstance(meta["tied"], dict) else {}
    module_ties = module.tied_names()
    values: dict[str, np.ndarray] = {}
    used: set[str] = set()
    missing = []
    for name, param in module.named_parameters():
        source = name if name in stored else stored_ties.get(name)
        if source not in stored:
            missing.append(name)
            continue
        used.add(source)
        value = stored[source]
        key = _PARAM + name
        if tuple(value.shape) != param.shape:
            raise checkpoint_error(
                path, f"{key!r} has shape {tuple(value.shape)}; the module expects {param.shape}"
            )
        if value.dtype != param.dtype:
            raise checkpoint_error(
                path, f"{key!r} has dtype {value.dtype}; the module expects {param.dtype}"
            )
        # `save` writes what it is given (a diverged model, to look at); the Trainer never
        # saves one, and resuming or evaluating one is refused here.
        if require_finite and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise checkpoint_error(path, f"{key!r} holds nan or inf; the weights are not usable")
        values[name] = value
    unexpected = sorted(set(stored) - used)
    if missing or unexpected:
        notes = [
            f"{name!r} is stored on its own but the module ties it to {module_ties[name]!r}"
            for name in unexpected
            if name in module_ties
        ]
        raise checkpoint_error(
            path,
            f"parameter names do not match the module: missing {missing}, unexpected "
            f"{unexpected}" + (f" ({'; '.join(notes)})" if notes else ""),
        )
    return values


def _optimizer_state(
    path: str, optimizer: Any, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> dict[str, Any]:
    saved = meta["optimizer"]
    name = type(optimizer).__name__
    if saved is None:
        raise checkpoint_error(
            path, f"holds no optimizer state, but a {name} was passed to load it into"
        )
    if saved.get("type") != name:
        raise checkpoint_error(
            path, f"holds {saved.get('type')} state; cannot load it into a {name}"
        )
    state = _decode(path, saved.get("state"), arrays)
    try:
        optimizer.validate_state_dict(state)
    except (KeyError, ValueError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise checkpoint_error(path, f"the optimizer state does not fit: {message}") from None
    return state


def _decode(path: str, value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY_REF}:
            key = value[_ARRAY_REF]
            if key not in arrays:
                raise checkpoint_error(
                    path, f"the optimizer state refers to a missing member {key!r}"
                )
            return arrays[key]
        if set(value) == {_INT_KEYS}:
            return {int(k): _decode(path, v, arrays) for k, v in value[_INT_KEYS].items()}
        return {k: _decode(path, v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(path, v, arrays) for v in value]
    return value
