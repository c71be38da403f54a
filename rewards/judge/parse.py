"""Parse a judge model's answer: a pointwise score or a pairwise A/B/tie verdict.

Both parsers raise ``JudgeParseError`` (a ``ValueError``) when the answer holds no usable
verdict -- garbage, an out-of-range or off-scale score, or conflicting verdicts -- so the caller
turns it into a counted per-item reward error instead of guessing a value. Pure functions; this
module does not call any model.
"""

from __future__ import annotations

import re

_NUM = r"(-?\d+(?:\.\d+)?)"
_SCALE = r"(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?"
#: most explicit first; within a pattern the last match wins (judges reason, then conclude)
_SCORE_PATTERNS = (
    re.compile(r"\[\[\s*" + _NUM + _SCALE + r"\s*\]\]"),
    re.compile(r"\b(?:score|rating|grade)\b\s*(?:is|of|=|:)?\s*\**\s*" + _NUM + _SCALE, re.I),
    # the answer's first line is the number (a completion-style rubric ending in "Score:")
    re.compile(r"^\W*?" + _NUM + _SCALE + r"[^\w\n]*(?:\n|$)"),
)
_VERDICT_PATTERNS = (
    re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.I),
    re.compile(r"\b(?:verdict|answer|winner|choice|better\s+response)\b\s*(?:is|:)?\s*\**\s*"
               r"(?:response\s+|output\s+)?\(?\b((?-i:A|B)|tie)\b\)?", re.I),
    re.compile(r"(?:\b(?:response|answer|output|assistant)\s*|(?<!\w))\(?((?-i:A|B))\)?"
               r"\s+is\s+(?:better|the\s+better\s+one)", re.I),
    re.compile(r"^\W*(A|B|tie)\W*$", re.I),  # the whole answer is the verdict
)
VERDICTS = ("A", "B", "tie")


class JudgeParseError(ValueError):
    """The judge's answer holds no usable score or verdict."""


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 60 else flat[:57] + "..."


def parse_score(text: str, *, min_score: float, max_score: float) -> float:
    """The score in a pointwise answer (``Score: 7``, ``[[7]]``, ``7/10``, a bare ``7`` on the
    first line).

    A score given on another scale (``4/5`` when ``max_score`` is 10) or outside
    ``[min_score, max_score]`` is an error, not rescaled.

    >>> parse_score("Reasoning... Score: 8", min_score=1, max_score=10)
    8.0
    """
    for pattern in _SCORE_PATTERNS:
        matches = pattern.findall(text.strip())
        if not matches:
            continue
        value, scale = matches[-1]
        if scale and float(scale) != float(max_score):
            raise JudgeParseError(f"score {value}/{scale} is not on the {min_score}-{max_score} "
                                  f"scale: {_snippet(text)!r}")
        score = float(value)
        if not min_score <= score <= max_score:
            raise JudgeParseError(f"score {value} outside [{min_score}, {max_score}]: "
                                  f"{_snippet(text)!r}")
        return score
    raise JudgeParseError(f"no score in the judge's answer: {_snippet(text)!r}")


def parse_verdict(text: str) -> str:
    """``"A"``, ``"B"`` or ``"tie"`` from a pairwise answer (``[[A]]``, ``[[C]]`` = tie,
    ``Verdict: B``, ``Response A is better``, ``A is better``, a bare ``B``); conflicting
    verdicts of the most explicit kind found are an error.

    >>> parse_verdict("A is concise but wrong. [[B]]")
    'B'
    """
    for pattern in _VERDICT_PATTERNS:
        found = {m.upper() for m in pattern.findall(text.strip())}
        if not found:
            continue
        found = {"TIE" if v == "C" else v for v in found}
        if len(found) > 1:
            raise JudgeParseError(f"conflicting verdicts {sorted(found)}: {_snippet(text)!r}")
        verdict = found.pop()
        return "tie" if verdict == "TIE" else verdict
    raise JudgeParseError(f"no verdict in the judge's answer: {_snippet(text)!r}")
