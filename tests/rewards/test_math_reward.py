"""``MathReward`` through the registry: values, format bonus, info, per-item errors."""

import pytest

from rewards import RewardItem, get_reward
from rewards.math.reward import MathReward, choice_letter, extract_choice, grade_batch


def test_registry_builds_math_reward():
    reward = get_reward("math", timeout=5.0, format_bonus=0.1)
    assert isinstance(reward, MathReward)
    assert reward.name == "math" and reward.version


def test_scores_correct_wrong_and_bonus():
    reward = MathReward(timeout=10.0, format_bonus=0.1, workers=2)
    items = [
        RewardItem("q", r"... so the answer is \boxed{\frac{1}{2}}.", "0.5"),
        RewardItem("q", r"... \boxed{3}", "4"),
        RewardItem("q", "The answer is 0.5", r"\frac12"),
        RewardItem("q", "I could not solve this problem, sorry.", "7"),
        RewardItem("q", r"\boxed{7}", None),
    ]
    scores = reward.score(items)
    assert [s.value for s in scores[:4]] == [1.1, 0.1, 1.0, 0.0]
    assert scores[0].info == {"extracted": r"\frac{1}{2}", "correct": True}
    assert scores[1].info["correct"] is False
    assert scores[3].info["extracted"] is None
    assert not scores[4].ok and "reference" in scores[4].error


def test_answer_form_number_refuses_an_expression_the_verifier_would_compute():
    items = [RewardItem("q", r"So \boxed{3 + 4}", "7"), RewardItem("q", r"\boxed{1,234}", "1234"),
             RewardItem("q", r"\boxed{\frac{14}{2}}", "7"), RewardItem("q", r"\boxed{8}", "7")]
    assert [s.value for s in MathReward().score(items)] == [1.0, 1.0, 1.0, 0.0]
    scores = MathReward(answer_form="number").score(items)
    assert [s.value for s in scores] == [0.0, 1.0, 0.0, 0.0]
    assert scores[0].info == {"extracted": "3 + 4", "correct": False, "status": "not_a_number"}
    assert "status" not in scores[3].info
    with pytest.raises(ValueError, match="answer_form must be 'any' or 'number'"):
        MathReward(answer_form="digits")


def test_reference_given_as_full_solution():
    solution = r"We add them: $2 + 3 = 5$. So the total is $\boxed{5}$."
    reward = MathReward()
    assert reward.score([RewardItem("q", r"\boxed{5}", solution)])[0].value == 1.0
    assert reward.score([RewardItem("q", r"\boxed{6}", solution)])[0].value == 0.0


def test_multiple_choice_letters():
    assert choice_letter("(D) Alina") == "D"
    assert choice_letter("C") == "C"
    assert choice_letter("42") is None
    assert extract_choice("The answer is for sure D, it can't be A or B") == "D"
    assert extract_choice(r"$\boxed{\text{(C)}}$") == "C"
    graded = grade_batch(["thinking about it, the answer is C", "B"], ["C", "(A) Cecile"])
    assert [g.correct for g in graded] == [True, False]
