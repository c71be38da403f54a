"""FormatReward: a non-empty ``\\boxed{}`` earns the bonus; nothing else does."""

from __future__ import annotations

import pytest

from rewards import get_reward
from rewards.base import RewardItem
from rewards.format import FormatReward


@pytest.mark.parametrize(("response", "expected"), [
    ("so the answer is \\boxed{42}.", 1.0),
    ("\\boxed{\\frac{1}{2}}", 1.0),
    ("\\boxed{} then \\boxed{7}", 1.0),
    ("\\boxed{}", 0.0),
    ("\\boxed{   }", 0.0),
    ("\\boxed{} }", 0.0),
    ("boxed{3}", 0.0),
    ("\\boxed{3", 0.0),
    ("the answer is 3", 0.0),
    ("", 0.0),
])
def test_default_pattern(response: str, expected: float) -> None:
    [score] = FormatReward().score([RewardItem("q", response)])
    assert score.ok and score.value == expected
    assert score.info["matched"] is (expected == 1.0)


def test_custom_pattern_and_value_and_registry() -> None:
    reward = get_reward("format", pattern=r"^<answer>.+</answer>$", value=0.25)
    scores = reward.score([RewardItem("q", "<answer>x</answer>"), RewardItem("q", "x")])
    assert [s.value for s in scores] == [0.25, 0.0]
    assert reward.name == "format" and "answer" in reward.version


def test_non_string_response_is_an_item_error_and_bad_pattern_is_refused() -> None:
    scores = FormatReward().score([RewardItem("q", None), RewardItem("q", "\\boxed{1}")])  # type: ignore[arg-type]
    assert scores[0].value is None and "response must be a str" in scores[0].error
    assert scores[1].value == 1.0
    with pytest.raises(ValueError, match="invalid pattern"):
        FormatReward(pattern="(")
