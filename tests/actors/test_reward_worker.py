"""RewardWorker without Ray: spec parsing, ordering, and errors that name the problem."""

from __future__ import annotations

import pytest

from actors.reward_worker import RewardWorker, build_reward
from rewards import RewardItem


def test_single_and_weighted_specs_score_in_order():
    items = [RewardItem("p", r"\boxed{2}"), RewardItem("p", "no box")]
    single = RewardWorker({"name": "format", "kwargs": {"value": 3.0}})
    assert [s.value for s in single.score(items)] == [3.0, 0.0]
    weighted = RewardWorker([{"name": "format", "weight": 2.0},
                             {"name": "format", "weight": -0.5, "kwargs": {"pattern": "box"}}])
    assert [s.value for s in weighted.score(items)] == [1.5, -0.5]
    assert single.ping()["reward"] == "format"


def test_bad_specs_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="unknown keys"):
        build_reward({"name": "format", "weight": 1.0})
    with pytest.raises(ValueError, match="expected"):
        build_reward("format")
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        build_reward({"name": "nope"})
