"""Checksum-verified downloads into a user cache (via pooch, imported only when needed)."""

import os
from collections.abc import Mapping

CACHE_NAME = "tinygrad-rnn"


class DataChecksumError(ValueError):
    """A downloaded file's SHA-256 does not match the published one; nothing was kept."""


def _pooch():
    try:
        import pooch  # lazy: only downloads need it, and not every machine has it
    except ImportError as err:
        raise ImportError(
            "downloading data needs pooch: pip install pooch (or install tinygrad-rnn with its "
            "dependencies)"
        ) from err
    return pooch


def default_cache_dir() -> str:
    """The per-user cache folder, e.g. ``~/.cache/tinygrad-rnn`` on Linux."""
    return os.fspath(_pooch().os_cache(CACHE_NAME))


def fetch(
    base_url: str, files: Mapping[str, str], cache_dir: str | os.PathLike | None = None
) -> dict[str, str]:
    """Download ``base_url/<name>`` for each name in ``files`` (name -> SHA-256 hex) into
    ``cache_dir`` and return name -> local path.

    A file already cached with the right checksum is not downloaded again. A download whose
    checksum differs raises DataChecksumError; pooch writes to a temporary file first and
    deletes it on a mismatch, so no corrupt file is left in the cache.
    """
    pooch = _pooch()
    folder = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    paths = {}
    for name, sha256 in files.items():
        url = f"{base_url.rstrip('/')}/{name}"
        try:
            paths[name] = pooch.retrieve(
                url, known_hash=f"sha256:{sha256}", fname=name, path=folder
            )
        except ValueError as err:
            if "hash" not in str(err).lower():
                raise
            raise DataChecksumError(
                f"checksum mismatch for {url}: expected SHA-256 {sha256}; the file was not "
                f"kept ({err})"
            ) from err
    return paths
