"""Vocabulary: a fixed two-way map between tokens (words or characters) and ids 0..V-1."""

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._checks import positive_int

_LEVELS = ("word", "char")
_ORDERS = ("first", "sorted", "freq")
_FORMAT = "tinygrad-rnn-vocab"
_VERSION = 1


def _tokens_of(text: Iterable[str] | str, level: str) -> list[str]:
    """A string is split into characters ("char") or on whitespace ("word")."""
    if isinstance(text, str):
        return list(text) if level == "char" else text.split()
    return list(text)


class Vocab:
    """Tokens and their ids, with an unknown-token policy.

    Args:
        tokens: the V distinct tokens; token ``i`` gets id ``i``.
        level: "word" or "char"; sets how a plain string is tokenised and how ``decode`` joins.
        unk: token that unknown tokens map to (it must be among ``tokens``), or None to raise
            KeyError naming the unknown token.

    Use ``Vocab.build`` to make one from a corpus.
    """

    def __init__(
        self, tokens: Sequence[str], level: str = "word", unk: str | None = "<unk>"
    ) -> None:
        if level not in _LEVELS:
            raise ValueError(f"level must be one of {_LEVELS}, got {level!r}")
        self.level = level
        self._tokens = tuple(str(t) for t in tokens)
        self._ids = {tok: i for i, tok in enumerate(self._tokens)}
        if len(self._ids) != len(self._tokens):
            dupes = sorted(t for t, c in Counter(self._tokens).items() if c > 1)
            raise ValueError(f"tokens must be distinct, repeated: {dupes[:10]}")
        if unk is not None and unk not in self._ids:
            raise ValueError(f"unk token {unk!r} is not among the {len(self._tokens)} tokens")
        self.unk = unk

    @classmethod
    def build(
        cls,
        tokens: Iterable[str] | str,
        level: str = "word",
        min_freq: int = 1,
        specials: Sequence[str] = (),
        unk: str | None = "<unk>",
        order: str = "first",
    ) -> "Vocab":
        """Build a vocabulary from a corpus.

        Args:
            tokens: an iterable of tokens, or a string (split into characters for
                ``level="char"``, on whitespace for ``level="word"``).
            level: "word" or "char".
            min_freq: tokens seen fewer times are left out (they become ``unk`` or an error).
            specials: tokens always included, first, in this order (e.g. "<pad>", "<eos>").
            unk: the unknown token, added right after ``specials`` if missing; None for none.
            order: order of the remaining tokens: "first" (first appearance), "sorted", or
                "freq" (most frequent first, ties by first appearance).
        """
        if level not in _LEVELS:
            raise ValueError(f"level must be one of {_LEVELS}, got {level!r}")
        if order not in _ORDERS:
            raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
        min_freq = positive_int(min_freq, "min_freq")
        # Counter keeps first-appearance order, which makes "first" and the "freq" ties stable.
        counts = Counter(_tokens_of(tokens, level))
        head = list(dict.fromkeys(specials))
        if unk is not None and unk not in head:
            head.append(unk)
        rest = [t for t, c in counts.items() if c >= min_freq and t not in head]
        if order == "sorted":
            rest.sort()
        elif order == "freq":
            rest.sort(key=lambda t: -counts[t])  # sort is stable
        return cls(head + rest, level=level, unk=unk)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self._tokens, self.level, self.unk) == (other._tokens, other.level, other.unk)

    def __hash__(self) -> int:
        return hash((self._tokens, self.level, self.unk))

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, level={self.level!r}, unk={self.unk!r})"

    @property
    def token_to_id(self) -> Mapping[str, int]:
        """Read-only token -> id map."""
        return MappingProxyType(self._ids)

    @property
    def id_to_token(self) -> tuple[str, ...]:
        """Tokens by id."""
        return self._tokens

    @property
    def unk_id(self) -> int | None:
        """Id of the unknown token, None if unknown tokens raise."""
        return None if self.unk is None else self._ids[self.unk]

    def encode(self, tokens: Iterable[str] | str) -> np.ndarray:
        """Tokens (or a string, split by ``level``) -> (T,) int64 ids.

        Unknown tokens map to ``unk``, or raise KeyError naming the token when ``unk`` is None.
        """
        toks = _tokens_of(tokens, self.level)
        ids = self._ids
        if self.unk is not None:
            unk_id = ids[self.unk]
            out = [ids.get(t, unk_id) for t in toks]
        else:
            try:
                out = [ids[t] for t in toks]
            except KeyError as err:
                raise KeyError(
                    f"token {err.args[0]!r} is not in the vocabulary of {len(self)} tokens "
                    f"and unk is None"
                ) from None
        return np.array(out, dtype=np.int64)

    def decode(self, ids: ArrayLike, join: bool = True) -> str | list[str]:
        """(T,) ids -> tokens, joined into a string ("" for char level, " " for word level)
        unless ``join=False``. Ids outside 0..V-1 raise IndexError."""
        flat = np.asarray(ids)
        if flat.ndim != 1:
            raise ValueError(f"decode takes (T,) ids, got shape {flat.shape}")
        if flat.size and not np.issubdtype(flat.dtype, np.integer):
            raise TypeError(f"decode takes integer ids, got dtype {flat.dtype}")
        size = len(self._tokens)
        bad = flat[(flat < 0) | (flat >= size)]
        if bad.size:
            raise IndexError(f"id {int(bad[0])} is outside the vocabulary 0..{size - 1}")
        toks = [self._tokens[i] for i in flat.tolist()]
        if not join:
            return toks
        return ("" if self.level == "char" else " ").join(toks)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, e.g. to embed in a checkpoint."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "level": self.level,
            "unk": self.unk,
            "tokens": list(self._tokens),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> "Vocab":
        """Inverse of ``to_dict``."""
        if state.get("format") != _FORMAT:
            raise ValueError(f"not a vocabulary dict (format {state.get('format')!r})")
        if state.get("version") != _VERSION:
            raise ValueError(f"unsupported vocabulary version {state.get('version')!r}")
        return cls(state["tokens"], level=state["level"], unk=state["unk"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as UTF-8 JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        """Read a vocabulary written by ``save``."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
