"""``CodeReward`` (the registry's ``code`` built-in): extraction, references, per-item errors."""

from __future__ import annotations

import pytest

from rewards import RewardItem, get_reward
from rewards.code.reward import CodeReward, extract_program, parse_reference

TESTS = "assert double(2) == 4\nassert double(-3) == -6\n"


def test_extract_program_takes_the_last_python_block() -> None:
    text = "try\n```python\nx = 1\n```\nbetter:\n```py\nx = 2\n```\nand ```text\nno\n```"
    assert extract_program(text) == "x = 2\n"
    assert extract_program("def f(): pass") == "def f(): pass"


def test_parse_reference_forms() -> None:
    assert parse_reference("assert f()") == {"tests": "assert f()"}
    humaneval = parse_reference({"tests": "def check(c):\n    assert c(1)\n",
                                 "entry_point": "f"})
    assert humaneval["tests"].rstrip().endswith("check(f)")
    stdin = parse_reference({"stdin_cases": [["1", "2"]]})
    assert stdin == {"tests": "", "stdin_cases": [("1", "2")]}
    for bad in (None, 3, {}, {"tests": 1}, {"tests": "x", "other": 1}):
        with pytest.raises(ValueError, match="reference"):
            parse_reference(bad)


def test_score_values_info_and_per_item_errors() -> None:
    reward = get_reward("code", timeout_s=5, workers=2)
    assert isinstance(reward, CodeReward) and reward.name == "code" and reward.version
    good = "Sure:\n```python\ndef double(x):\n    return 2 * x\n```\n"
    items = [
        RewardItem("p", good, TESTS),
        RewardItem("p", "def double(x):\n    return x + 2\n", TESTS),
        RewardItem("p", good, None),
        RewardItem("p", "print(input()[::-1])", {"stdin_cases": [["abc", "cba"]]}),
        RewardItem("p", good, "assert ("),
    ]
    scores = reward.score(items)
    assert [s.value for s in scores] == [1.0, 0.0, None, 1.0, None]
    assert scores[0].info["status"] == "passed" and scores[0].info["tests_run"] == 2
    assert scores[1].info["status"] == "failed" and scores[1].info["tests_run"] == 1
    assert "reference" in (scores[2].error or "")
    assert "tests" in (scores[4].error or "")
