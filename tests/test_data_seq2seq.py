"""load_seq2seq on the shared toy sets and on small hand-written files."""

import os

import numpy as np
import pytest
from conftest import shared_data_path

from tinygrad_rnn.data import DataNotFoundError, load_seq2seq


@pytest.fixture(scope="module")
def addition_path():
    return shared_data_path("seq2seq", "addition.txt")


@pytest.fixture(scope="module")
def addition(addition_path):
    return load_seq2seq(addition_path)


def test_addition_shapes_split_and_start_token(addition):
    assert addition.x_train.shape == (45_000, 7)
    assert addition.t_train.shape == (45_000, 5)
    assert addition.x_test.shape == (5_000, 7)
    assert addition.t_test.shape == (5_000, 5)
    assert sorted(addition.vocab.id_to_token) == sorted("0123456789+ _")
    assert np.all(addition.t_train[:, 0] == addition.start_id)
    assert np.all(addition.t_test[:, 0] == addition.start_id)


def test_addition_lines_decode_back_to_the_file(addition, addition_path):
    with open(addition_path, encoding="utf-8") as f:
        lines = set(f.read().splitlines())
    decoded = [
        q + t
        for q, t in zip(
            addition.decode(addition.x_train[:50]), addition.decode(addition.t_train[:50])
        )
    ]
    assert all(line in lines for line in decoded)
    for q, t in zip(addition.decode(addition.x_test[:50]), addition.decode(addition.t_test[:50])):
        a, b = q.strip().split("+")
        assert int(t[1:]) == int(a) + int(b)


def test_train_and_test_are_disjoint_and_cover_every_line(addition, addition_path):
    rows = np.concatenate(
        [
            np.concatenate([addition.x_train, addition.t_train], axis=1),
            np.concatenate([addition.x_test, addition.t_test], axis=1),
        ]
    )
    with open(addition_path, encoding="utf-8") as f:
        lines = sorted(f.read().splitlines())
    assert sorted(addition.decode(rows)) == lines


def test_the_split_is_deterministic_by_seed(addition, addition_path):
    again = load_seq2seq(addition_path)
    np.testing.assert_array_equal(again.x_test, addition.x_test)
    other = load_seq2seq(addition_path, seed=7)
    assert not np.array_equal(other.x_test, addition.x_test)


def test_reverse_input_reverses_each_question(addition, addition_path):
    reversed_ = load_seq2seq(addition_path, reverse_input=True)
    np.testing.assert_array_equal(reversed_.x_train, addition.x_train[:, ::-1])
    np.testing.assert_array_equal(reversed_.t_train, addition.t_train)
    assert reversed_.decode_question(reversed_.x_train[:5]) == addition.decode(addition.x_train[:5])
    assert reversed_.decode_question(reversed_.x_train[0]) == addition.decode(addition.x_train[0])


def test_date_widths():
    data = load_seq2seq(shared_data_path("seq2seq", "date.txt"), test_fraction=0.2)
    assert data.x_train.shape == (40_000, 29) and data.x_test.shape == (10_000, 29)
    assert data.t_train.shape == (40_000, 11)
    assert all(len(t) == 11 and t[0] == "_" for t in data.decode(data.t_test[:20]))


def test_a_set_name_is_looked_up_in_the_data_folder(addition, addition_path, monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGRAD_RNN_DATA", os.path.dirname(os.path.dirname(addition_path)))
    monkeypatch.chdir(tmp_path)  # no file named "addition" here
    np.testing.assert_array_equal(load_seq2seq("addition").x_test, addition.x_test)
    (tmp_path / "addition").mkdir()  # a run directory named like the set never shadows it
    np.testing.assert_array_equal(load_seq2seq("addition").x_test, addition.x_test)
    (tmp_path / "addition").rmdir()
    (tmp_path / "addition").write_text("1+1_2\n" * 20)  # nor does a file: the set comes first
    np.testing.assert_array_equal(load_seq2seq("addition").x_test, addition.x_test)
    (tmp_path / "addition").unlink()
    (tmp_path / "addition").mkdir()
    monkeypatch.delenv("TINYGRAD_RNN_DATA")
    with pytest.raises(DataNotFoundError, match="TINYGRAD_RNN_DATA is not set"):
        load_seq2seq("addition")  # a folder is no data file: the error says where to look


def test_unpadded_lines_are_padded_with_spaces(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("1+1_2\n10+10_20\n\n", encoding="utf-8")
    data = load_seq2seq(path, test_fraction=0.0)
    assert data.x_train.shape == (2, 5) and data.t_train.shape == (2, 3)
    assert data.x_test.shape == (0, 5)
    assert sorted(data.decode(data.x_train)) == ["1+1  ", "10+10"]
    assert sorted(data.decode(data.t_train)) == ["_2 ", "_20"]


def test_min_padding_gives_every_question_that_many_spaces_the_longest_too(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("1+1_2\n10+10_20\n", encoding="utf-8")
    data = load_seq2seq(path, test_fraction=0.0, min_padding=2, reverse_input=True)
    assert data.x_train.shape == (2, 7) and data.t_train.shape == (2, 3)  # answers unchanged
    assert sorted(data.decode_question(data.x_train)) == ["1+1    ", "10+10  "]
    # reversed, every question starts with padding: the encoder's first input is the same
    assert {q[:2] for q in data.decode(data.x_train)} == {"  "}


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_a_bad_min_padding_is_refused_naming_it(tmp_path, bad):
    path = tmp_path / "pairs.txt"
    path.write_text("1+1_2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"min_padding must be an integer >= 0; got {bad!r}"):
        load_seq2seq(path, min_padding=bad)


def test_numpy_integers_and_floats_are_numbers_and_strings_are_not(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("1+1_2\n10+10_20\n", encoding="utf-8")
    data = load_seq2seq(path, test_fraction=np.float32(0.0), min_padding=np.int64(1))
    assert data.x_train.shape == (2, 6)
    with pytest.raises(ValueError, match=r"test_fraction must be a number in \[0, 1\), got '0.1'"):
        load_seq2seq(path, test_fraction="0.1")


def test_only_the_first_underscore_splits(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("ab_c_d\n", encoding="utf-8")
    data = load_seq2seq(path, test_fraction=0.0)
    assert data.decode(data.t_train[0]) == "_c_d"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DataNotFoundError, match="missing.txt"):
        load_seq2seq(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("1+1_2\nno separator\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_seq2seq(bad)
    with pytest.raises(ValueError, match="test_fraction"):
        load_seq2seq(bad, test_fraction=1.0)


@pytest.mark.parametrize(
    "lines, fraction, n_test", [(7, 0.5, 3), (10, 0.25, 2), (9, 0.1, 0), (10, 0.3, 3)]
)
def test_the_test_split_holds_floor_of_n_times_the_fraction(tmp_path, lines, fraction, n_test):
    """The held-out share is floor(N * test_fraction) lines, as documented. The shared
    addition set (50,000 lines x 0.1)
    splits exactly, so it cannot tell floor from ceil or from round: caught, a ceil that
    held out 4 of 7 lines at 0.5."""
    path = tmp_path / "pairs.txt"
    path.write_text("".join(f"{i}+{i}_{2 * i}\n" for i in range(lines)), encoding="utf-8")
    data = load_seq2seq(path, test_fraction=fraction)
    assert len(data.x_test) == len(data.t_test) == n_test
    assert len(data.x_train) == len(data.t_train) == lines - n_test


def test_trailing_spaces_of_an_answer_are_kept_as_padding(tmp_path):
    """Spaces are padding, not noise: a file whose answers are padded wider than any of them
    keeps that width (Ta counts the start token and every space), so a model trained on it
    decodes as many steps as the file says. Caught: read_pairs stripping all trailing
    whitespace instead of only the line ending, which shrank Ta from 5 to 3 here; the
    shared sets have an answer as wide as their padding, so they cannot show it."""
    path = tmp_path / "pairs.txt"
    path.write_text("1+1_2   \r\n5+5_10  \n", encoding="utf-8")
    data = load_seq2seq(path, test_fraction=0.0)
    assert data.t_train.shape == (2, 5)
    assert sorted(data.decode(data.t_train)) == ["_10  ", "_2   "]
