"""Where data files live, and the error raised when one is missing."""

import os

DATA_ENV = "TINYGRAD_RNN_DATA"


class DataNotFoundError(FileNotFoundError):
    """A data file is missing; the message says where we looked and how to fix it."""


def data_root() -> str | None:
    """The data folder from ``$TINYGRAD_RNN_DATA`` (absolute; relative values resolve against
    the current directory), or None if the variable is unset or empty."""
    root = os.environ.get(DATA_ENV, "")
    return os.path.abspath(root) if root else None


def resolve_dir(data_dir: str | os.PathLike | None, subdir: str) -> str | None:
    """``data_dir`` if given, else ``$TINYGRAD_RNN_DATA/<subdir>``, else None."""
    if data_dir is not None:
        return os.fspath(data_dir)
    root = data_root()
    return None if root is None else os.path.join(root, subdir)


def require_file(path: str | os.PathLike, hint: str = "") -> str:
    """Return ``path`` if it is a file, else raise DataNotFoundError naming it (plus ``hint``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        where = os.path.abspath(path)
        if os.path.isdir(path):
            message = f"data file expected, got a directory: {where}"
        elif os.path.exists(path):
            message = f"data file expected, got something that is not a regular file: {where}"
        else:
            message = f"data file not found: {where}"
        raise DataNotFoundError(f"{message}. {hint}" if hint else message)
    return path
