"""Tokenisation, vocabulary and caption encoding.

Tokens follow the Karpathy split files (``sentences[].tokens``): lower-case, punctuation deleted
(not replaced by a space: ``"man's" -> "mans"``, as the Karpathy/neuraltalk preprocessing did),
split on white space. Non-ASCII letters survive (``"Café" -> "café"``). The special tokens and
their ids are those of :mod:`ica_captioning.tokens`.
"""

from __future__ import annotations

import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ica_captioning.tokens import (
    END_ID,
    END_WORD,
    PAD_WORD,
    SPECIAL_WORDS,
    START_ID,
    START_WORD,
    UNK_ID,
)

_ASCII_PUNCT = set(string.punctuation)
_ASCII_DELETE = str.maketrans("", "", string.punctuation)


def _is_punctuation(ch: str) -> bool:
    # ASCII punctuation and symbols (string.punctuation), plus every Unicode punctuation
    # category (curly quotes, dashes, ellipsis, ...).
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def tokenize(raw: str) -> list[str]:
    """Karpathy-consistent tokens of a raw caption.

    Args:
        raw: caption text.

    Returns:
        Lower-case tokens with punctuation removed; empty for a caption without words.
    """
    text = raw.lower()
    if text.isascii():  # fast path (almost every caption): C-level delete of ASCII punctuation
        return text.translate(_ASCII_DELETE).split()
    text = unicodedata.normalize("NFC", text)
    return "".join(ch for ch in text if not _is_punctuation(ch)).split()


def as_tokens(tokens: Iterable[str] | np.ndarray) -> list[str]:
    """A caption's tokens as a plain list of words.

    Token lists read back from Parquet are numpy arrays, those built in Python are lists; the
    lexicon and the metrics index and slice them as lists.

    Args:
        tokens: the words (list, tuple or 1-D array of strings).

    Returns:
        A new list of the words, in order.
    """
    return list(tokens.tolist() if isinstance(tokens, np.ndarray) else tokens)


@dataclass
class Vocabulary:
    """Word <-> id mapping; ids 0..3 are the special tokens of :mod:`ica_captioning.tokens`.

    Attributes:
        itos: id -> word.
        min_freq: minimum train-split count for a word to get its own id.
        max_len: maximum number of words kept when encoding a caption
            (``ingestion.max_caption_len``).
    """

    itos: list[str]
    min_freq: int
    max_len: int
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.itos[: len(SPECIAL_WORDS)]) != SPECIAL_WORDS:
            raise ValueError(
                f"vocabulary must start with {SPECIAL_WORDS}, got {self.itos[: len(SPECIAL_WORDS)]}"
            )
        if len(set(self.itos)) != len(self.itos):
            raise ValueError("vocabulary has duplicate words")
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """``[<start>, w_0, ..., w_{n-1}, <end>]`` as int32, at most ``max_len`` words."""
        words = [self.stoi.get(t, UNK_ID) for t in list(tokens)[: self.max_len]]
        return np.array([START_ID, *words, END_ID], dtype=np.int32)

    def decode(self, ids: Iterable[int], *, strip_specials: bool = True) -> list[str]:
        """Words of ``ids``; stops at ``<end>`` and drops ``<start>``/``<pad>`` by default."""
        words = []
        for i in ids:
            word = self.itos[int(i)]
            if strip_specials:
                if word == END_WORD:
                    break
                if word in (PAD_WORD, START_WORD):
                    continue
            words.append(word)
        return words

    def to_json(self) -> dict[str, Any]:
        """The ``vocabulary`` catalog entry: ``{"itos", "min_freq", "max_len"}``."""
        return {
            "itos": list(self.itos),
            "min_freq": int(self.min_freq),
            "max_len": int(self.max_len),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocabulary:
        """Rebuild from ``to_json()`` output (the ``vocabulary`` catalog entry)."""
        return cls(list(data["itos"]), int(data["min_freq"]), int(data["max_len"]))


def build_vocabulary(
    token_lists: Iterable[Sequence[str]], *, min_freq: int, max_len: int
) -> Vocabulary:
    """Vocabulary of the words seen at least ``min_freq`` times.

    Args:
        token_lists: tokens of the (train) captions.
        min_freq: minimum count for a word to be kept; rarer words encode as ``<unk>``
            (``ingestion.min_word_freq``).
        max_len: maximum caption length in words for encoding (``ingestion.max_caption_len``).

    Returns:
        The vocabulary; words after the specials sorted by decreasing count, then alphabetically
        (deterministic).
    """
    if min_freq < 1:
        raise ValueError(f"min_word_freq must be >= 1, got {min_freq}")
    if max_len < 1:
        raise ValueError(f"max_caption_len must be >= 1, got {max_len}")
    counts = Counter(t for tokens in token_lists for t in tokens)
    # A caption that literally contains "<unk>" must not give the word a second id.
    for special in SPECIAL_WORDS:
        counts.pop(special, None)
    words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return Vocabulary([*SPECIAL_WORDS, *words], min_freq, max_len)


def encode_captions(captions: pd.DataFrame, vocabulary: Vocabulary) -> pd.DataFrame:
    """The ``encoded_captions`` table (docs/contracts.md).

    Args:
        captions: the ``captions`` table (``caption_id``, ``image_id``, ``split``, ``tokens``).
        vocabulary: the vocabulary.

    Returns:
        ``caption_id``, ``image_id``, ``split``, ``ids`` (int32 arrays), ``length`` (number of ids),
        plus ``num_unk`` (number of ``<unk>`` ids, for inspection).
    """
    ids = [vocabulary.encode(t) for t in captions["tokens"]]
    return pd.DataFrame(
        {
            "caption_id": captions["caption_id"].astype("int64").to_numpy(),
            "image_id": captions["image_id"].astype("int64").to_numpy(),
            "split": captions["split"].astype(str).to_numpy(),
            "ids": ids,
            "length": np.array([len(x) for x in ids], dtype=np.int64),
            "num_unk": np.array([int((x == UNK_ID).sum()) for x in ids], dtype=np.int64),
        }
    )
