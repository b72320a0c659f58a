"""Vocab: building, encoding, the unknown-token policy, and JSON round trips."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_rnn.data import Vocab


@settings(deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_char_level_encode_decode_round_trip(text):
    vocab = Vocab.build(text, level="char", unk=None)
    ids = vocab.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert vocab.decode(ids) == text
    assert len(vocab) == len(set(text))


@settings(deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "cat", "dog", "<eos>", "z"]), max_size=50))
def test_word_level_encode_decode_round_trip(words):
    vocab = Vocab.build(words, level="word")
    assert vocab.decode(vocab.encode(words), join=False) == words
    assert vocab.decode(vocab.encode(words)) == " ".join(words)


def test_ids_follow_specials_unk_then_first_appearance():
    vocab = Vocab.build("b a b c", level="word", specials=("<pad>",), unk="<unk>")
    assert vocab.id_to_token == ("<pad>", "<unk>", "b", "a", "c")
    assert vocab.token_to_id["c"] == 4
    assert vocab.unk_id == 1
    assert len(vocab) == 5
    assert vocab.encode(["zebra", "b"]).tolist() == [1, 2]  # unknown -> unk_id, not id 0


@pytest.mark.parametrize(
    "order, expected", [("sorted", ("a", "b", "c")), ("freq", ("c", "a", "b"))]
)
def test_other_orders(order, expected):
    vocab = Vocab.build(list("bacacc"), level="char", unk=None, order=order)
    assert vocab.id_to_token == expected


def test_unknown_tokens_map_to_unk():
    vocab = Vocab.build("the cat", level="word", unk="<unk>")
    np.testing.assert_array_equal(vocab.encode("the dog"), [vocab.token_to_id["the"], 0])


def test_unknown_tokens_raise_naming_the_token_without_unk():
    vocab = Vocab.build("the cat", level="word", unk=None)
    with pytest.raises(KeyError, match="'dog'"):
        vocab.encode(["the", "dog"])


def test_min_freq_leaves_rare_tokens_out():
    vocab = Vocab.build("a a b", level="word", min_freq=2)
    assert "a" in vocab and "b" not in vocab
    assert vocab.encode("b")[0] == vocab.unk_id
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build("a", min_freq=0)
    for bad in ("2", 1.5):  # named, not a bare comparison error or a silent ceil
        with pytest.raises(ValueError, match=f"min_freq must be an integer >= 1, got {bad!r}"):
            Vocab.build("a", min_freq=bad)


def test_the_token_maps_are_read_only():
    vocab = Vocab.build("a b", level="word")
    with pytest.raises(TypeError):
        vocab.token_to_id["c"] = 5
    assert isinstance(vocab.id_to_token, tuple)


def test_save_and_load_round_trip(tmp_path):
    vocab = Vocab.build("naïve café <eos> 東京", level="word", specials=("<pad>",))
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded == vocab
    assert loaded.id_to_token == vocab.id_to_token and loaded.unk == vocab.unk
    assert loaded.level == "word"
    assert json.loads(path.read_text(encoding="utf-8"))["tokens"][0] == "<pad>"


def test_dict_round_trip_is_plain_json():
    vocab = Vocab.build("hello", level="char", unk=None)
    state = vocab.to_dict()
    assert Vocab.from_dict(json.loads(json.dumps(state))) == vocab
    with pytest.raises(ValueError, match="format"):
        Vocab.from_dict({"tokens": ["a"]})


def test_decode_refuses_ids_outside_the_vocabulary():
    vocab = Vocab.build("ab", level="char", unk=None)
    with pytest.raises(IndexError, match="2"):
        vocab.decode([0, 2])
    with pytest.raises(IndexError):
        vocab.decode([-1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tokens=["a", "a"]), "distinct"),
        (dict(tokens=["a"], unk="<unk>"), "unk"),
        (dict(tokens=["a"], level="byte"), "level"),
    ],
)
def test_bad_vocabularies_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Vocab(**kwargs)


def test_freq_order_breaks_ties_by_first_appearance():
    """order="freq": most frequent first, and tokens seen equally often keep the order in
    which they first appeared (documented, and what makes the ids stable). The existing
    order test has no ties; caught: ties broken alphabetically (a (-count, token) key)."""
    vocab = Vocab.build("zeta b zeta alpha b mu alpha", level="word", unk=None, order="freq")
    assert vocab.id_to_token == ("zeta", "b", "alpha", "mu")
    chars = Vocab.build("dcbadcb", level="char", unk=None, order="freq")
    assert chars.id_to_token == ("d", "c", "b", "a")
