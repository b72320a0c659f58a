"""A run's directory: claimed by one new run, and held by one process while it trains.

Two processes training into one folder would overwrite each other's checkpoints, so
a new run refuses a folder that already holds a run, and a process holds an advisory
lock on the folder's `.lock` while it trains there (`flock`, released by the kernel
however the process ends). Readers (evaluate, generate) take no lock. A new run that
stops before writing anything leaves no folder behind: the folders it made go again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: run directories go unlocked
    fcntl = None

__all__ = ["RunDirectory", "RunDirectoryError", "LOCK_NAME"]

LOCK_NAME = ".lock"
# What a run writes: a folder holding either already holds a run.
_RUN_FILES = ("checkpoint.npz", "metrics.json")


class RunDirectoryError(ValueError):
    """A run directory cannot be used: it holds a run, is in use, or is not writable."""


class RunDirectory:
    """One run's folder, as this process uses it (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.made: list[Path] = []  # folders this process created for it, outermost first
        self.locked = False  # held by this process (or locking unsupported here)
        self._fd: int | None = None

    @classmethod
    def claim_new(cls, path: str | os.PathLike, given: bool) -> RunDirectory:
        """The folder of a new run, made now and checked writable before any training.

        A given folder (--out) must not hold a run already; the default one
        (runs/RECIPE-TIMESTAMP, `given` False) gets -2, -3, ... when another run
        started in the same second.
        """
        run = cls(path)
        out = run.path
        if given:
            if out.exists() and not out.is_dir():
                raise RunDirectoryError(f"--out {out}: expected a directory; got a file")
            held = [name for name in _RUN_FILES if (out / name).exists()]
            if held:
                raise RunDirectoryError(
                    f"--out {out} already holds a run ({', '.join(held)}); continue it with "
                    f"`tinygrad-rnn train --resume {out}`, or give another --out"
                )
            try:
                run._make(out, exist_ok=True)
            except OSError as err:
                raise RunDirectoryError(f"--out {out}: cannot make the directory: {err}") from None
        else:
            candidate, n = out, 1
            try:
                while True:
                    try:
                        run._make(candidate, exist_ok=False)
                        break
                    except FileExistsError:
                        n += 1
                        candidate = out.with_name(f"{out.name}-{n}")
            except OSError as err:  # runs/ is a file, the folder is not writable, ...
                raise RunDirectoryError(
                    f"cannot make the run directory {candidate}: {err}"
                ) from None
            run.path = candidate
        run.check_writable(f"--out {run.path}: expected a writable directory")
        return run

    def _make(self, folder: Path, exist_ok: bool) -> None:
        """mkdir -p `folder`, remembering the folders it created."""
        missing = [p for p in [folder, *folder.parents] if not p.exists()]
        if not missing and not exist_ok:
            raise FileExistsError(errno.EEXIST, "File exists", str(folder))
        for p in reversed(missing):  # outermost first
            p.mkdir(exist_ok=exist_ok or p != folder)
            self.made.append(p)

    def check_writable(self, message: str) -> None:
        """Refuse, with `message` and the reason, a folder this process cannot write."""
        try:
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as err:
            raise RunDirectoryError(f"{message}: {err}") from None

    def lock(self) -> None:
        """Hold the folder for this process; refuse if another process holds it.

        Where the file system has no locks (some network mounts), say so and go on
        unlocked rather than refuse every run.
        """
        if fcntl is None:
            self.locked = True
            return
        path = self.path / LOCK_NAME
        # Read-only: a lock needs no write access, so another user's .lock does not block.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirectoryError(
                f"{self.path} is in use: another tinygrad-rnn process is training there"
            ) from None
        except OSError as err:  # no locks on this file system
            os.close(fd)
            print(f"tinygrad-rnn: warning: {self.path} cannot be locked ({err}); do not train "
                  "into it from two processes at once", file=sys.stderr)  # fmt: skip
            self.locked = True
            return
        # The lock is on the file we opened: if a run that gave the folder up removed that
        # file meanwhile, the lock holds nothing, and the folder is not ours.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if not same:
            os.close(fd)
            raise RunDirectoryError(f"{self.path} changed while it was being locked; try again")
        self._fd = fd
        self.locked = True

    def tidy_if_unused(self) -> None:
        """For a new run that stopped before writing anything: remove its lock file and
        the folders it made, while it still holds the lock."""
        if not self.locked:
            return
        with contextlib.suppress(OSError):
            if {p.name for p in self.path.iterdir()} <= {LOCK_NAME}:
                (self.path / LOCK_NAME).unlink(missing_ok=True)
                for folder in reversed(self.made):  # innermost first; a non-empty one stays
                    folder.rmdir()

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        self.locked = False
