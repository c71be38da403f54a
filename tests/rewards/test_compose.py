"""WeightedReward: weighted sums, dict specs through the registry, errors naming components."""

from __future__ import annotations

import pytest

from rewards import REWARDS, FunctionReward
from rewards.base import RewardItem
from rewards.compose import WeightedReward
from rewards.format import FormatReward


def _length(prompt: str, response: str, reference: object) -> float:
    return float(len(response))


def _picky(prompt: str, response: str, reference: object) -> float:
    if response == "bad":
        raise ValueError("cannot score 'bad'")
    return 10.0


def test_weighted_sum_of_pairs() -> None:
    """0.5 * len + 2 * format: '\\boxed{1}' (9 chars) -> 4.5 + 2 = 6.5; 'ab' -> 1 + 0 = 1."""
    reward = WeightedReward([(FunctionReward(_length, name="len"), 0.5), (FormatReward(), 2.0)])
    scores = reward.score([RewardItem("q", "\\boxed{1}"), RewardItem("q", "ab")])
    assert [s.value for s in scores] == [6.5, 1.0]
    assert scores[0].info == {"len": 9.0, "format": 1.0}


def test_dict_specs_go_through_the_registry() -> None:
    with REWARDS.override("length", lambda **_: FunctionReward(_length, name="length")):
        reward = WeightedReward([{"name": "length", "weight": -1.0},
                                 {"name": "format", "weight": 3.0, "kwargs": {"value": 0.5}}])
        [score] = reward.score([RewardItem("q", "\\boxed{z}")])
    assert score.value == pytest.approx(-9.0 + 1.5)


def test_component_error_fails_only_that_item_and_names_the_component() -> None:
    reward = WeightedReward([(FunctionReward(_picky, name="picky"), 1.0), (FormatReward(), 1.0)])
    scores = reward.score([RewardItem("q", "bad"), RewardItem("q", "good")])
    assert scores[0].value is None and "component 'picky'" in scores[0].error
    assert "cannot score 'bad'" in scores[0].error
    assert scores[1].value == 10.0


def test_same_reward_twice_gets_distinct_labels() -> None:
    reward = WeightedReward([(FormatReward(), 1.0), (FormatReward(value=2.0), 1.0)])
    [score] = reward.score([RewardItem("q", "\\boxed{1}")])
    assert score.value == 3.0 and score.info == {"format#0": 1.0, "format#1": 2.0}


@pytest.mark.parametrize(("components", "message"), [
    ([], "must not be empty"),
    ([{"weight": 1.0}], "'name' required"),
    ([{"name": "format", "wieght": 1.0}], "expected keys"),
    ([{"name": "format", "weight": "heavy"}], r"components\[0\].weight"),
    ([("not a reward", 1.0)], "no score"),
    ([42], "expected a dict spec"),
])
def test_bad_specs_are_refused(components: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WeightedReward(components)


def test_unknown_component_name_lists_known() -> None:
    with pytest.raises(KeyError, match="known: .*format"):
        WeightedReward([{"name": "no-such-reward"}])
