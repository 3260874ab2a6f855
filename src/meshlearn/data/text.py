"""Text for the language-model reference: the corpus that ships with the package and a character vocabulary.

The corpus is ``data/corpus/village.txt`` (about 40 kB of plain ASCII English), listed in
``[tool.setuptools.package-data]`` so it ships in the wheel; nothing is downloaded. It is our own
text: :func:`compose_corpus` writes it from a small seeded grammar (ten people, ten places, ten
kinds of things; errands, questions and answers, the weather, counting and small sums), so it is
license-clean and regular enough for a tiny model to learn in a few hundred steps. The shipped
file is ``compose_corpus(seed=0)``, checked by a test; to rebuild it::

    python -c "from meshlearn.data.text import write_corpus; write_corpus()"

Tokens are characters: :class:`CharVocab` maps each distinct character of a text to an id
(sorted, so the same text gives the same ids) and back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from meshlearn.errors import DataError, UsageError

__all__ = ["CORPUS_FILE", "CharVocab", "load_corpus", "compose_corpus", "write_corpus"]

CORPUS_FILE = "corpus/village.txt"  # inside the meshlearn.data package

_PEOPLE = ["Ada", "Bruno", "Chen", "Dara", "Emil", "Farah", "Goro", "Hana", "Ivo", "Juno"]
_PLACES = ["the mill", "the harbour", "the market", "the old bridge", "the library", "the orchard",
           "the station", "the school", "the bakery", "the hill"]
_THINGS = [("apple", "apples"), ("basket", "baskets"), ("letter", "letters"), ("lamp", "lamps"),
           ("book", "books"), ("kite", "kites"), ("loaf", "loaves"), ("map", "maps"), ("bell", "bells"),
           ("boat", "boats")]
_COLOURS = ["red", "blue", "green", "yellow", "white", "black", "brown", "grey"]
_TIMES = ["In the morning", "At noon", "In the evening", "At night", "On Monday", "On Friday",
          "After the rain", "Before sunrise"]
_VERBS = ["carried", "painted", "found", "mended", "sold", "bought", "counted", "wrapped"]
_SKIES = ["grey", "clear", "dark", "bright", "pale"]
_WINDS = ["soft", "cold", "strong", "warm", "still"]
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _errand(r: random.Random) -> str:
    n = r.randint(2, 9)
    return (f"{r.choice(_TIMES)}, {r.choice(_PEOPLE)} {r.choice(_VERBS)} {_NUMBERS[n]} {r.choice(_COLOURS)} "
            f"{r.choice(_THINGS)[1]} at {r.choice(_PLACES)}.")


def _walk(r: random.Random) -> str:
    a, b = r.sample(_PEOPLE, 2)
    src, dst = r.sample(_PLACES, 2)
    return f"{a} walked from {src} to {dst} with {b}."


def _question(r: random.Random) -> str:
    a, b = r.sample(_PEOPLE, 2)
    thing = f"{r.choice(_COLOURS)} {r.choice(_THINGS)[0]}"
    return f'{a} asked {b}, "Where is the {thing}?" {b} said, "It is near {r.choice(_PLACES)}."'


def _weather(r: random.Random) -> str:
    return f"The sky over {r.choice(_PLACES)} was {r.choice(_SKIES)}, and the wind was {r.choice(_WINDS)}."


def _likes(r: random.Random) -> str:
    a, b = r.sample(_PEOPLE, 2)
    x, y = r.sample(_THINGS, 2)
    return f"{a} likes {x[1]}, but {b} likes {y[1]}."


def _sum(r: random.Random) -> str:
    a = r.randint(0, 10)
    b = r.randint(0, 10 - a)
    thing = r.choice(_THINGS)

    def n(k: int, more: str = "") -> str:
        return f"{_NUMBERS[k]} {more}{thing[0] if k == 1 else thing[1]}"

    return f"{n(a).capitalize()} and {n(b, 'more ')} make {n(a + b)}."


def _count(r: random.Random) -> str:
    start = r.randint(1, 5)
    words = _NUMBERS[start : start + r.randint(3, 5)]
    return f"{r.choice(_PEOPLE)} counted {', '.join(words)}."


_SENTENCES = [_errand, _walk, _question, _weather, _likes, _sum, _count]


def compose_corpus(seed: int = 0, chars: int = 40_000) -> str:
    """Paragraphs of 3..6 seeded sentences, separated by blank lines, until ``chars`` characters."""
    r = random.Random(int(seed))
    paragraphs: list[str] = []
    total = 0
    while total < chars:
        text = " ".join(r.choice(_SENTENCES)(r) for _ in range(r.randint(3, 6)))
        paragraphs.append(text)
        total += len(text) + 2
    return "\n\n".join(paragraphs) + "\n"


def write_corpus(path: str | Path | None = None, seed: int = 0) -> Path:
    """Write ``compose_corpus(seed)`` to ``path`` (default: the shipped corpus file in the source tree)."""
    target = Path(path) if path is not None else Path(__file__).parent / CORPUS_FILE
    target.write_text(compose_corpus(seed), encoding="ascii")
    return target


def load_corpus(path: str | Path | None = None) -> str:
    """The shipped corpus, or the UTF-8 text file at ``path``."""
    source = resources.files("meshlearn.data").joinpath(CORPUS_FILE) if path is None else Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"corpus file {source} does not exist; pass the path of a UTF-8 text file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"corpus file {source} is not readable UTF-8 text: {exc}") from None
    if len(text) < 2:
        raise DataError(f"corpus file {source} holds {len(text)} characters; a language model needs at least 2")
    return text


@dataclass(frozen=True)
class CharVocab:
    """Character tokens: ``chars[i]`` is the character of id ``i``."""

    chars: str

    def __post_init__(self) -> None:
        if not self.chars or len(set(self.chars)) != len(self.chars):
            raise UsageError(f"a vocabulary needs distinct characters, got {self.chars!r:.60}")

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """Every distinct character of ``text``, sorted."""
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """``text`` as int64 ids; characters outside the vocabulary raise UsageError naming them."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - index.keys())
        if unknown:
            raise UsageError(f"characters {''.join(unknown)!r} are not in the vocabulary; "
                             "build it from a text that contains them (CharVocab.from_text)")
        return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        """Ids (any int sequence or array) back to text."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise UsageError(f"token ids must lie in 0..{self.size - 1}, got {int(ids.min())}..{int(ids.max())}")
        return "".join(self.chars[i] for i in ids)
