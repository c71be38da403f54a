"""Decontamination: drop texts that share a word n-gram with a held-out (eval) set.

Texts are normalised to word tokens (NFKC, lower case, runs of letters/digits; punctuation and
whitespace are separators), so a copy that only differs in case, punctuation or spacing still
matches. A text is contaminated when it shares at least one n-gram (default 8, as in the GPT-3
and Llama decontamination reports) with any eval text; an eval text shorter than ``n`` words
counts as one shorter n-gram, so a short eval question copied whole is still caught.

``jaccard`` (word n-gram set similarity) serves the near-duplicate filter of self-instruct.
The n-gram index is an in-memory set (fine for eval sets of thousands of prompts). This module
does not read files or know about recipes; the synthetic-data stages build a ``Decontaminator``
from the recipe's eval sources and report how many texts it removed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_WORD = re.compile(r"[^\W_]+")


def normalize_words(text: str) -> list[str]:
    """Word tokens of ``text``: NFKC, lower case, letters/digits only.

    >>> normalize_words("The ANSWER is: 42!")
    ['the', 'answer', 'is', '42']
    """
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def normalize_text(text: str) -> str:
    """``text`` as its normalised words joined by single spaces (a dedup key).

    >>> normalize_text("  Hello,   World! ")
    'hello world'
    """
    return " ".join(normalize_words(text))


def word_ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    """The set of ``n``-grams of ``words``; a text shorter than ``n`` is one shorter gram.

    >>> sorted(word_ngrams(["a", "b", "c"], 2))
    [('a', 'b'), ('b', 'c')]
    >>> word_ngrams(["a"], 3)
    {('a',)}
    """
    if n < 1:
        raise ValueError(f"word_ngrams: n must be >= 1, got {n}")
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def text_of(value: object) -> str:
    """Plain text of a prompt/response value: a string, or the contents of a message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    raise TypeError(f"expected a string or a list of messages, got {type(value).__name__}")


def jaccard(a: str, b: str, n: int = 2) -> float:
    """Jaccard similarity of the word ``n``-gram sets of two texts (0 when both are empty).

    >>> jaccard("add two numbers", "add two numbers please")
    0.6666666666666666
    """
    ga, gb = word_ngrams(normalize_words(a), n), word_ngrams(normalize_words(b), n)
    union = ga | gb
    return len(ga & gb) / len(union) if union else 0.0


class Decontaminator:
    """Flags texts sharing a word ``n``-gram with any of ``eval_texts``.

    Args:
        eval_texts: the held-out texts (e.g. eval prompts) that training data must not contain.
        n: n-gram length in normalised words (8 by default).
    """

    def __init__(self, eval_texts: Iterable[str], n: int = 8) -> None:
        if n < 1:
            raise ValueError(f"Decontaminator: n must be >= 1, got {n}")
        self.n = n
        self._grams: set[tuple[str, ...]] = set()
        # eval texts shorter than n words: their lengths, to look for them as shorter grams
        self._short_lengths: set[int] = set()
        self.num_eval_texts = 0
        for text in eval_texts:
            words = normalize_words(text)
            self.num_eval_texts += 1
            if 0 < len(words) < n:
                self._short_lengths.add(len(words))
            self._grams |= word_ngrams(words, n)

    def is_contaminated(self, text: str) -> bool:
        """True when ``text`` shares an n-gram with an eval text (or contains a short one)."""
        words = normalize_words(text)
        if not words or not self._grams:
            return False
        if len(words) >= self.n and not self._grams.isdisjoint(word_ngrams(words, self.n)):
            return True
        return any(not self._grams.isdisjoint(word_ngrams(words, length))
                   for length in self._short_lengths if length <= len(words))

    def filter(self, texts: Iterable[str]) -> tuple[list[str], int]:
        """The clean texts, in order, and how many were removed."""
        kept: list[str] = []
        removed = 0
        for text in texts:
            if self.is_contaminated(text):
                removed += 1
            else:
                kept.append(text)
        return kept, removed
