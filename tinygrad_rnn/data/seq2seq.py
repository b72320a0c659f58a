"""Character-level sequence-to-sequence toy sets: ``question_answer`` lines (addition, dates)."""

import math
import os
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._checks import as_generator
from .files import DATA_ENV, DataNotFoundError, data_root, require_file
from .vocab import Vocab

START = "_"  # separates question from answer; kept as the decoder's start token
SEQ2SEQ_SETS = ("addition", "date")


@dataclass(frozen=True)
class Seq2SeqData:
    """Padded char-id arrays of a seq2seq set.

    ``x_*`` are questions (N, Tq); ``t_*`` are targets (N, Ta) that start with the start token
    ``_`` followed by the answer (feed ``t[:, :-1]`` to the decoder, score ``t[:, 1:]``). With
    ``reverse_input`` each question row is stored reversed.
    """

    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    vocab: Vocab
    reverse_input: bool = False

    @property
    def start_id(self) -> int:
        """Id of the start token ``_``."""
        return self.vocab.token_to_id[START]

    def decode(self, ids: ArrayLike) -> str | list[str]:
        """(T,) ids -> string, or (N, T) ids -> N strings, exactly as stored."""
        array = np.asarray(ids)
        if array.ndim == 2:
            return [self.vocab.decode(row) for row in array]
        return self.vocab.decode(array)

    def decode_question(self, ids: ArrayLike) -> str | list[str]:
        """Like ``decode`` for questions, undoing ``reverse_input``."""
        array = np.asarray(ids)
        return self.decode(array[..., ::-1] if self.reverse_input else array)


def _resolve(path: str | os.PathLike) -> str:
    """A path, or a set name from SEQ2SEQ_SETS: $TINYGRAD_RNN_DATA/seq2seq/<name>.txt where
    that file exists (a folder named like the set in the working directory, such as a
    run directory, never shadows it), else the name as a path."""
    path = os.fspath(path)
    if path in SEQ2SEQ_SETS:
        root = data_root()
        in_root = None if root is None else os.path.join(root, "seq2seq", f"{path}.txt")
        if in_root is not None and os.path.isfile(in_root):
            return in_root
        if not os.path.isfile(path):
            if in_root is None:
                raise DataNotFoundError(
                    f"seq2seq set {path!r}: {DATA_ENV} is not set; set it to the data folder "
                    f"that holds seq2seq/{path}.txt, or pass the file's path"
                )
            path = in_root
    return require_file(path, f"Pass the path of a question_answer file, or set {DATA_ENV}.")


def read_pairs(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Questions and targets (``_`` + answer) of a ``question_answer`` file, unpadded."""
    questions, targets = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")  # spaces are padding, not noise: keep them
            if not line:
                continue
            cut = line.find(START)
            if cut < 0:
                raise ValueError(f"{path}, line {number}: no {START!r} separator in {line!r}")
            questions.append(line[:cut])
            targets.append(line[cut:])
    return questions, targets


def _pad(strings: list[str], min_padding: int = 0) -> tuple[list[str], int]:
    width = max(len(s) for s in strings) + min_padding
    return [s.ljust(width) for s in strings], width


def load_seq2seq(
    path: str | os.PathLike,
    reverse_input: bool = False,
    test_fraction: float = 0.1,
    seed: int | np.random.Generator | None = 1984,
    min_padding: int = 0,
) -> Seq2SeqData:
    """Load a ``question_answer`` file as padded char ids with a seeded train/test split.

    Args:
        path: file path, or "addition" / "date" for ``$TINYGRAD_RNN_DATA/seq2seq/<name>.txt``.
        reverse_input: store each question reversed (``x[:, ::-1]``), which often trains
            faster.
        test_fraction: share of lines held out, ``floor(N * test_fraction)``, in [0, 1).
        seed: int or Generator for the split's permutation (never numpy's global RNG).
        min_padding: spaces every question gets after its text, the longest included
            (Tq grows by this). With ``reverse_input`` the padding comes first, so with 1
            or more every question starts with the same character.

    Each line splits at its first ``_``; questions and targets (``_`` + answer) are padded with
    spaces to the longest of each (addition: Tq = 7, Ta = 5). The character vocabulary covers
    both sides, by first appearance.
    """
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float, np.integer, np.floating))
        or not 0.0 <= test_fraction < 1.0
    ):
        raise ValueError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")
    if isinstance(min_padding, bool) or not isinstance(min_padding, (int, np.integer)) or (
        min_padding < 0
    ):
        raise ValueError(f"min_padding must be an integer >= 0; got {min_padding!r}")
    min_padding = int(min_padding)
    file = _resolve(path)
    questions, targets = read_pairs(file)
    if not questions:
        raise ValueError(f"{file} has no question_answer lines")
    questions, q_width = _pad(questions, min_padding)
    targets, t_width = _pad(targets)
    vocab = Vocab.build(
        (ch for q, t in zip(questions, targets) for ch in q + t), level="char", unk=None
    )
    n = len(questions)
    x = vocab.encode("".join(questions)).reshape(n, q_width)
    t = vocab.encode("".join(targets)).reshape(n, t_width)
    if reverse_input:
        x = np.ascontiguousarray(x[:, ::-1])
    perm = as_generator(seed).permutation(n)
    n_test = math.floor(n * test_fraction + 1e-9)
    test, train = perm[:n_test], perm[n_test:]
    return Seq2SeqData(x[train], t[train], x[test], t[test], vocab, bool(reverse_input))
