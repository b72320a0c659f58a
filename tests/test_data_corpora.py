"""Corpora on the shared data: PTB counts, plain text files, and checksum-verified downloads.

The data folder comes from $TINYGRAD_RNN_DATA (relative values are taken from the repository
root, as CI sets ``../shared/data``); tests that need it skip when it is missing.
"""

import functools
import hashlib
import http.server
import os
import shutil
import threading

import numpy as np
import pytest
from conftest import shared_data_path

from tinygrad_rnn.data import (
    PTB_SHA256,
    DataChecksumError,
    DataNotFoundError,
    load_ptb,
    load_text,
)


@pytest.fixture(scope="module")
def ptb_dir():
    path = shared_data_path("ptb")
    for name in PTB_SHA256:
        shared_data_path("ptb", name)
    return path


@pytest.fixture(scope="module")
def ptb(ptb_dir):
    return load_ptb(ptb_dir)


def test_ptb_counts_match_the_published_ones(ptb):
    assert ptb.train.shape == (929_589,)
    assert ptb.valid.shape == (73_760,)
    assert ptb.test.shape == (82_430,)
    assert len(ptb.vocab) == 10_000
    train, valid, test, vocab = ptb  # unpacks like a tuple
    assert vocab is ptb.vocab
    for split in (train, valid, test):
        assert split.dtype == np.int64
        assert split.min() >= 0 and split.max() < 10_000


def test_ptb_newlines_become_eos(ptb, ptb_dir):
    with open(os.path.join(ptb_dir, "ptb.valid.txt"), encoding="utf-8") as f:
        text = f.read()
    eos = ptb.vocab.token_to_id["<eos>"]
    assert np.count_nonzero(ptb.valid == eos) == text.count("\n")
    first_line = text.split("\n")[0].split()
    assert ptb.vocab.decode(ptb.valid[: len(first_line) + 1], join=False) == first_line + ["<eos>"]


def test_ptb_default_folder_comes_from_the_environment(ptb, ptb_dir, monkeypatch):
    monkeypatch.setenv("TINYGRAD_RNN_DATA", os.path.dirname(ptb_dir))
    again = load_ptb()
    np.testing.assert_array_equal(again.test, ptb.test)
    assert again.vocab == ptb.vocab


def test_missing_ptb_says_where_it_looked_and_how_to_fix_it(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError) as info:
        load_ptb(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "TINYGRAD_RNN_DATA" in message and "data_dir" in message and "download=True" in message
    assert isinstance(info.value, FileNotFoundError)

    monkeypatch.delenv("TINYGRAD_RNN_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="not set"):
        load_ptb()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(monkeypatch):
    """Serve a folder on 127.0.0.1 at a free port; yields a function folder -> base URL."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    servers = []

    def start(folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_download_verifies_and_returns_the_same_corpus(ptb, ptb_dir, tmp_path, serve):
    pytest.importorskip("pooch")
    site = tmp_path / "site"
    site.mkdir()
    for name in PTB_SHA256:
        shutil.copy(os.path.join(ptb_dir, name), site / name)
    cache = tmp_path / "cache"
    empty = tmp_path / "empty"
    empty.mkdir()
    corpus = load_ptb(empty, download=True, base_url=serve(site), cache_dir=cache)
    for a, b in ((corpus.train, ptb.train), (corpus.valid, ptb.valid), (corpus.test, ptb.test)):
        np.testing.assert_array_equal(a, b)
    assert corpus.vocab == ptb.vocab
    for name, sha in PTB_SHA256.items():
        assert _sha256(cache / name) == sha


def test_download_url_can_come_from_the_environment(ptb, ptb_dir, tmp_path, serve, monkeypatch):
    pytest.importorskip("pooch")
    site = tmp_path / "site"
    site.mkdir()
    for name in PTB_SHA256:
        shutil.copy(os.path.join(ptb_dir, name), site / name)
    monkeypatch.setenv("TINYGRAD_RNN_PTB_URL", serve(site))
    monkeypatch.delenv("TINYGRAD_RNN_DATA", raising=False)
    corpus = load_ptb(download=True, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(corpus.valid, ptb.valid)
    # A base_url given in code wins over the variable (here a dead address).
    monkeypatch.setenv("TINYGRAD_RNN_PTB_URL", "http://127.0.0.1:1/")
    corpus = load_ptb(download=True, cache_dir=tmp_path / "cache2", base_url=serve(site))
    np.testing.assert_array_equal(corpus.valid, ptb.valid)


def test_a_corrupted_download_is_refused_and_not_kept(ptb_dir, tmp_path, serve):
    pytest.importorskip("pooch")
    site = tmp_path / "site"
    site.mkdir()
    for name in PTB_SHA256:
        shutil.copy(os.path.join(ptb_dir, name), site / name)
    with open(site / "ptb.train.txt", "r+b") as f:
        f.seek(1000)
        f.write(b"#")  # one flipped byte
    cache = tmp_path / "cache"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataChecksumError, match="ptb.train.txt"):
        load_ptb(empty, download=True, base_url=serve(site), cache_dir=cache)
    left = sorted(os.listdir(cache)) if cache.exists() else []
    assert left == []  # no partial or corrupt file in the cache
    assert isinstance(DataChecksumError("x"), ValueError)


def test_load_text_reads_tiny_shakespeare_by_character():
    path = shared_data_path("tinyshakespeare", "input.txt")
    ids, vocab = load_text(path)
    assert ids.shape == (1_115_394,)
    assert len(vocab) == 65
    assert vocab.id_to_token == tuple(sorted(vocab.id_to_token))
    with open(path, encoding="utf-8") as f:
        head = f.read(200)
    assert vocab.decode(ids[:200]) == head


def test_load_text_by_word_and_with_a_given_vocab(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("the cat sat\nthe dog\n", encoding="utf-8")
    ids, vocab = load_text(train, level="word")
    assert vocab.decode(ids, join=False) == ["the", "cat", "sat", "<eos>", "the", "dog", "<eos>"]
    other = tmp_path / "other.txt"
    other.write_text("the dog sat\n", encoding="utf-8")
    ids2, same = load_text(other, level="word", vocab=vocab)
    assert same is vocab
    assert vocab.decode(ids2) == "the dog sat <eos>"


def test_load_text_reports_a_missing_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataNotFoundError, match="nope.txt"):
        load_text(missing)
    with pytest.raises(ValueError, match="level"):
        load_text(missing, level="byte")


def test_load_text_says_what_is_wrong_with_a_path_that_is_no_text_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found: .*nope.txt"):
        load_text(tmp_path / "nope.txt")
    with pytest.raises(DataNotFoundError, match=f"got a directory: {tmp_path}"):
        load_text(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty.txt holds no char tokens: it is empty"):
        load_text(empty)
    blank = tmp_path / "blank.txt"
    blank.write_text("  \t ")
    with pytest.raises(ValueError, match=r"blank.txt holds no word tokens: .* all whitespace"):
        load_text(blank, level="word")
    assert len(load_text(blank)[0]) == 4  # by character, whitespace is text
