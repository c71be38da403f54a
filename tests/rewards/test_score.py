"""Tier 0: ``Score.correct``, the one rule of "solved" shared by RL accuracy and the eval."""

from __future__ import annotations

import pytest

from rewards.base import Score


@pytest.mark.parametrize(("score", "correct"), [
    (Score(1.0), True),                      # a full reward counts
    (Score(2.5), True),                      # >= 1, not == 1
    (Score(0.999), False),
    (Score(0.0), False),
    (Score(None, error="timeout"), False),   # an unscored item is never correct
    (Score(1.0, error="late"), False),       # an error wins over a value
    (Score(0.0, info={"correct": True}), True),    # the verifier's word wins over the value
    (Score(1.0, info={"correct": False}), False),
    (Score(None, error="x", info={"correct": True}), True),
    (Score(1.0, info={"extracted": "4"}), True),   # other info keys change nothing
])
def test_correct_follows_info_then_value(score: Score, correct: bool) -> None:
    assert score.correct is correct
