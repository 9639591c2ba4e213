"""Lexicon from caption words to detector classes, and the public ``match_classes`` API.

The word lists are data (``lexicon.yml`` in this package), extensible by configuration
(``matching.extra_lexicon``). Matching is greedy longest-phrase-first from left to right, so
"teddy bear" is one mention of ``teddy bear`` (not also one of ``bear``) and "hot" alone matches
nothing. A phrase labels its head noun, the last word.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

VOWELS = set("aeiou")


def regular_plural(word: str) -> str:
    """English regular plural of one word (``box`` -> ``boxes``, ``baby`` -> ``babies``)."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if len(word) > 1 and word.endswith("y") and word[-2] not in VOWELS:
        return word[:-1] + "ies"
    return word + "s"


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class Lexicon:
    """Phrases (token tuples) -> candidate classes, in preference order.

    Args:
        classes: class name -> words/phrases naming it (the class name is always added).
        irregular_plurals: singular -> plural(s) replacing the regular rule.
        no_plural: words/phrases that get no generated plural.
        not_objects: phrases consumed without naming any class.
    """

    def __init__(
        self,
        classes: Mapping[str, Sequence[str]],
        irregular_plurals: Mapping[str, str | Sequence[str]] | None = None,
        no_plural: Iterable[str] = (),
        not_objects: Iterable[str] = (),
    ) -> None:
        self.irregular = {
            k.lower().strip(): _as_list(v) for k, v in (irregular_plurals or {}).items()
        }
        self.no_plural = {w.lower().strip() for w in no_plural}
        self.classes: list[str] = []
        self._table: dict[tuple[str, ...], list[str]] = {}
        for cname, words in classes.items():
            self.add(cname, words)
        for phrase in not_objects:
            for form in self._forms(phrase):
                self._table[form] = []  # consumed, names nothing
        self._rebuild()

    # -- construction -------------------------------------------------------------------------
    def _forms(self, phrase: str) -> list[tuple[str, ...]]:
        """Token tuples of a phrase: as written, plural(s), and concatenated for phrases."""
        words = phrase.lower().split()
        if not words:
            return []
        text = " ".join(words)
        variants = [text]
        if text not in self.no_plural:
            if text in self.irregular:
                variants += self.irregular[text]
            elif words[-1] in self.irregular:
                variants += [" ".join(words[:-1] + [p]) for p in self.irregular[words[-1]]]
            else:
                variants.append(" ".join(words[:-1] + [regular_plural(words[-1])]))
        forms = [tuple(v.split()) for v in variants]
        if len(words) > 1:  # "hot dog" is also written "hotdog"
            forms += [("".join(f),) for f in forms]
        return list(dict.fromkeys(forms))

    def add(self, class_name: str, words: Iterable[str]) -> None:
        """Add words naming ``class_name`` (appended after the existing candidates)."""
        cname = str(class_name).strip()
        if not cname:
            raise ValueError("lexicon class names must be non-empty")
        if cname not in self.classes:
            self.classes.append(cname)
        for phrase in [cname, *words]:
            for form in self._forms(str(phrase)):
                candidates = self._table.setdefault(form, [])
                if cname not in candidates:
                    candidates.append(cname)
        self._rebuild()

    def with_classes(self, classes: Iterable[str]) -> Lexicon:
        """This lexicon, extended by classes it does not know yet (named by themselves).

        A detector with its own label set (a custom or LVIS model) still gets its class names
        and their plurals matched. Returns ``self`` when every class is known.
        """
        unknown = frozenset(c for c in classes if c not in self._known)
        if not unknown:
            return self
        cached = self._extended.get(unknown)
        if cached is None:
            cached = copy.copy(self)
            cached.classes = list(self.classes)
            cached._table = {k: list(v) for k, v in self._table.items()}
            cached._extended = {}
            for cname in sorted(unknown):
                cached.add(cname, [])
            self._extended[unknown] = cached
        return cached

    def _rebuild(self) -> None:
        # Candidates are ordered by class order (file order), whatever order words were added in.
        rank = {c: i for i, c in enumerate(self.classes)}
        self._phrases: dict[tuple[str, ...], tuple[str, ...]] = {
            k: tuple(sorted(v, key=rank.__getitem__)) for k, v in self._table.items()
        }
        self._single = {k[0]: v for k, v in self._phrases.items() if len(k) == 1}
        self._starts = {k[0] for k in self._phrases if len(k) > 1}
        self.max_len = max((len(k) for k in self._phrases), default=1)
        self._known = frozenset(self.classes)
        self._extended: dict[frozenset[str], Lexicon] = {}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], extra: Mapping[str, Any] | None = None):
        """Build from the ``lexicon.yml`` structure plus ``extra`` (class -> words)."""
        lex = cls(
            data.get("classes") or {},
            data.get("irregular_plurals") or {},
            data.get("no_plural") or [],
            data.get("not_objects") or [],
        )
        for cname, words in (extra or {}).items():
            lex.add(cname, _as_list(words or []))
        return lex

    @classmethod
    def from_package(cls, extra: Mapping[str, Any] | None = None) -> Lexicon:
        """The package lexicon (``lexicon.yml``), extended by ``extra``."""
        return cls.from_mapping(_package_data(), extra)

    # -- matching -----------------------------------------------------------------------------
    def mentions(self, tokens: Sequence[str]) -> list[tuple[int, tuple[str, ...]]]:
        """All class mentions in a caption, whether or not the class was detected.

        Args:
            tokens: the caption's lower-case tokens.

        Returns:
            ``[(head_position, candidate_classes), ...]`` in caption order; candidates in
            preference order.
        """
        out: list[tuple[int, tuple[str, ...]]] = []
        n = len(tokens)
        i = 0
        while i < n:
            tok = tokens[i]
            if tok in self._starts:
                for length in range(min(self.max_len, n - i), 1, -1):
                    cands = self._phrases.get(tuple(tokens[i : i + length]))
                    if cands is not None:
                        if cands:
                            out.append((i + length - 1, cands))
                        i += length
                        break
                else:
                    cands = self._single.get(tok)
                    if cands:
                        out.append((i, cands))
                    i += 1
                continue
            cands = self._single.get(tok)
            if cands:
                out.append((i, cands))
            i += 1
        return out

    def match(self, tokens: Sequence[str], classes: Iterable[str]) -> list[tuple[int, str]]:
        """Mentions of the given (detected) classes: ``[(token_position, class_name), ...]``."""
        present = set(classes)
        out = []
        for pos, cands in self.with_classes(present).mentions(tokens):
            for cname in cands:
                if cname in present:
                    out.append((pos, cname))
                    break
        return out

    def words_for(self, class_name: str) -> list[str]:
        """All phrases (as strings) that name ``class_name`` (for docs and tests)."""
        return sorted(" ".join(k) for k, v in self._phrases.items() if class_name in v)


@lru_cache(maxsize=1)
def _package_data() -> dict[str, Any]:
    text = resources.files("ica_captioning.matching").joinpath("lexicon.yml").read_text("utf-8")
    return yaml.safe_load(text)


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The package lexicon without extensions (cached)."""
    return Lexicon.from_package()


def match_classes(
    tokens: Sequence[str], classes: Iterable[str], lexicon: Lexicon | None = None
) -> list[tuple[int, str]]:
    """Which tokens of a caption name a class present in the image.

    Args:
        tokens: the caption's lower-case tokens (as in the ``captions`` table).
        classes: class names detected in the image.
        lexicon: lexicon to use; default: the package lexicon.

    Returns:
        ``[(token_position, class_name), ...]``, one entry per mention, in caption order; for a
        multi-word name the position is its head noun (last word).

    Example:
        >>> match_classes(["two", "teddy", "bears", "and", "a", "man"], {"teddy bear", "person"})
        [(2, 'teddy bear'), (5, 'person')]
    """
    return (lexicon or default_lexicon()).match(tokens, classes)
