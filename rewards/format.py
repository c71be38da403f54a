"""Format shaping reward: a fixed bonus when the response has the expected answer format.

By default the format is a non-empty ``\\boxed{...}`` (an empty ``\\boxed{}`` or one holding only
whitespace does not count). This checks the *shape* of the answer only; it never looks at the
reference and says nothing about correctness (see ``rewards.math`` for that).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rewards.base import RewardItem, Score

#: ``\boxed{`` not followed by (whitespace and) ``}``, closed on the same line.
NONEMPTY_BOXED = r"\\boxed\{(?!\s*\})[^\n]*\}"


class FormatReward:
    """``value`` when ``re.search(pattern, response)`` matches, else 0.0.

    Args:
        pattern: regular expression searched in the response (Python ``re`` syntax).
        value: the score given to a matching response.
    """

    name = "format"

    def __init__(self, pattern: str = NONEMPTY_BOXED, value: float = 1.0) -> None:
        try:
            self._regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"FormatReward: invalid pattern {pattern!r}: {exc}") from exc
        self.pattern = pattern
        self.value = float(value)
        self.version = f"1:{pattern}:{self.value}"

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """One score per item: ``value`` if the response matches the pattern, else 0.0."""
        out: list[Score] = []
        for item in items:
            if not isinstance(item.response, str):
                out.append(Score(None, error=f"response must be a str, got "
                                             f"{type(item.response).__name__}"))
                continue
            matched = self._regex.search(item.response) is not None
            out.append(Score(self.value if matched else 0.0, info={"matched": matched}))
        return out
