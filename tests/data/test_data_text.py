"""The shipped text corpus (our own, from a seeded grammar) and the character vocabulary."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from meshlearn.data import CharVocab, load_corpus
from meshlearn.data.text import CORPUS_FILE, compose_corpus, write_corpus
from meshlearn.errors import DataError, UsageError

ROOT = Path(__file__).parents[2]


def test_shipped_corpus_is_the_generators_output():
    text = load_corpus()
    assert text == compose_corpus(seed=0)
    assert 20_000 <= len(text) <= 60_000 and text.isascii()
    assert compose_corpus(seed=1) != text


def test_corpus_ships_as_package_data():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "data/" + CORPUS_FILE.rsplit("/", 1)[0] + "/*.txt" in package_data["meshlearn"]


def test_vocab_round_trip_and_errors():
    text = load_corpus()
    vocab = CharVocab.from_text(text)
    assert vocab.chars == "".join(sorted(set(text))) and vocab.size == len(set(text))
    ids = vocab.encode(text[:500])
    assert ids.dtype == np.int64 and vocab.decode(ids) == text[:500]
    with pytest.raises(UsageError, match="not in the vocabulary"):
        vocab.encode("Ada ~ Bruno")
    with pytest.raises(UsageError, match="token ids"):
        vocab.decode([0, vocab.size])
    with pytest.raises(UsageError):
        CharVocab("aa")


def test_load_a_user_file_and_bad_files(tmp_path):
    assert load_corpus(write_corpus(tmp_path / "c.txt", seed=2)) == compose_corpus(seed=2)
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="UTF-8"):
        load_corpus(tmp_path / "bin.txt")
