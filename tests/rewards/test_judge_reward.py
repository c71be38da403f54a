"""``JudgeReward`` with plain-function judges: scores, position swap, cache, deadline, errors.

The judge functions read the rendered judge prompt, as a model would, and log every call, so
the tests see exactly which prompts reached the "model".
"""

from __future__ import annotations

import threading

import pytest

from rewards import RewardItem, get_reward
from rewards.judge import JudgeReward
from rlsys.controller.synthetic import select_pairs

PAIR_RUBRIC = "Q: {{ prompt }}\nA: {{ response_a }}\nB: {{ response_b }}"


class Judge:
    """Answers each judge prompt with ``answer(prompt)`` and records every batch it gets."""

    def __init__(self, answer):
        self.answer = answer
        self.batches: list[list[str]] = []

    def __call__(self, prompts: list[str]) -> list[str]:
        self.batches.append(list(prompts))
        return [self.answer(p) for p in prompts]

    @property
    def prompts(self) -> list[str]:
        return [p for batch in self.batches for p in batch]


def _length_score(prompt: str) -> str:
    """'Score: N' with N the length of the response line (clipped to 1..10)."""
    response = prompt.split("Response: ", 1)[1].split("\n", 1)[0]
    return f"Score: {min(10, max(1, len(response)))}"


def _prefers(word: str):
    """A content judge: picks the response containing ``word``, else a tie."""
    def answer(prompt: str) -> str:
        a = prompt.split("\nA: ", 1)[1].split("\nB: ", 1)[0]
        b = prompt.split("\nB: ", 1)[1]
        return "[[A]]" if word in a and word not in b else (
            "[[B]]" if word in b and word not in a else "[[C]]")
    return answer


def test_pointwise_scores_are_normalised_and_garbage_is_a_counted_error():
    judge = Judge(lambda p: "I'm sorry, I can't" if "Response: bad" in p else _length_score(p))
    reward = JudgeReward(judge, min_score=1, max_score=10)
    scores = reward.score([RewardItem("q", "x"), RewardItem("q", "bad"),
                           RewardItem("q", "abcdefghij")])
    assert scores[0].value == pytest.approx(0.0) and scores[0].info["raw"] == 1.0
    assert not scores[1].ok and "no score" in scores[1].error and scores[1].value is None
    assert scores[1].error.startswith("judge: ")
    assert scores[2].value == pytest.approx(1.0)
    assert reward.stats["parse_errors"] == 1 and reward.stats["judged"] == 3


def test_same_prompt_and_response_are_judged_once():
    judge = Judge(_length_score)
    reward = JudgeReward(judge, batch_size=2)
    items = [RewardItem("q", "abc"), RewardItem("q", "abcd"), RewardItem("q", "abc")]
    first = reward.score(items)
    assert len(judge.prompts) == 2  # the repeat inside the call is not re-judged
    assert all(len(batch) <= 2 for batch in judge.batches)
    second = reward.score(items + [RewardItem("other prompt", "abc")])
    assert len(judge.prompts) == 3  # only the new (prompt, response) reaches the judge
    assert [s.value for s in second[:3]] == [s.value for s in first]
    assert reward.stats["cache_hits"] == 1 + 3
    assert reward.stats["requests"] == 7


def test_cache_is_bounded_and_can_be_off():
    judge = Judge(_length_score)
    reward = JudgeReward(judge, cache_size=1)
    for response in ("a", "bb", "a"):  # "bb" evicts "a"
        reward.score([RewardItem("q", response)])
    assert len(judge.prompts) == 3
    off = JudgeReward(judge, cache_size=0)
    off.score([RewardItem("q", "a")])
    off.score([RewardItem("q", "a")])
    assert len(judge.prompts) == 5


def test_position_swap_cancels_a_judge_that_always_says_a():
    judge = Judge(lambda p: "[[A]]")
    reward = JudgeReward(judge, mode="pairwise", rubric=PAIR_RUBRIC)
    prefs = reward.prefer(["q", "q"], ["good", "bad"], ["bad", "good"])
    assert [p.value for p in prefs] == [0.0, 0.0]
    assert prefs[0].info == {"verdicts": ["A", "A"], "consistent": False}
    assert reward.stats["position_inconsistent"] == 2
    # each pair was asked in both orders
    assert "A: good\nB: bad" in judge.prompts[0] and "A: bad\nB: good" in judge.prompts[1]
    ranked = reward.rank([("q", ["one", "two", "three"], None)])[0]
    assert [s.value for s in ranked] == [0.0, 0.0, 0.0]
    samples = [(0, text, s) for text, s in zip(["one", "two", "three"], ranked, strict=True)]
    pairs, dropped = select_pairs([{"prompt": "q"}], samples, min_margin=0.0)
    assert pairs == [] and dropped["no_margin"] == 1  # a biased judge makes no pairs


def test_a_consistent_judge_ranks_the_preferred_response_first():
    reward = JudgeReward(Judge(_prefers("good")), mode="pairwise", rubric=PAIR_RUBRIC)
    assert [p.value for p in reward.prefer(["q"] * 3, ["good", "bad", "x"],
                                           ["bad", "good", "y"])] == [1.0, -1.0, 0.0]
    assert reward.stats["position_inconsistent"] == 0
    ranked = reward.rank([("q", ["bad", "good", "meh"], None), ("r", ["only"], None)])
    # round robin: good beats both (+1), bad and meh lose to good and tie each other (-0.5)
    assert [s.value for s in ranked[0]] == [-0.5, 1.0, -0.5]
    assert ranked[0][1].info["comparisons"] == 2
    assert ranked[1][0].value == 0.0  # a lone candidate has nothing to be compared with


def test_pairwise_score_compares_with_the_reference_response():
    reward = JudgeReward(Judge(_prefers("good")), mode="pairwise", rubric=PAIR_RUBRIC)
    scores = reward.score([RewardItem("q", "good", "bad"), RewardItem("q", "bad", "good"),
                           RewardItem("q", "good", None)])
    assert [s.value for s in scores[:2]] == [1.0, -1.0]
    assert not scores[2].ok and "reference" in scores[2].error


def test_one_unparsable_order_makes_the_pair_an_error():
    # answers "[[A]]" when the good response is shown first, garbage when it is second
    judge = Judge(lambda p: "[[A]]" if "A: good" in p else "hmm")
    reward = JudgeReward(judge, mode="pairwise", rubric=PAIR_RUBRIC)
    (pref,) = reward.prefer(["q"], ["good"], ["bad"])
    assert not pref.ok and "no verdict" in pref.error
    ranked = reward.rank([("q", ["good", "bad"], None)])[0]
    assert not ranked[0].ok and "none of 1 comparisons parsed" in ranked[0].error
    # the garbage answer was judged once (then cached) but is an error each time it is used
    assert reward.stats["judged"] == 2 and reward.stats["parse_errors"] == 2


def test_a_judge_past_the_deadline_gives_counted_errors_not_cached():
    release = threading.Event()

    def stuck(prompts):
        release.wait()
        return ["Score: 5"] * len(prompts)

    reward = JudgeReward(stuck, timeout_s=0.2, batch_size=1)
    try:
        scores = reward.score([RewardItem("q", "a"), RewardItem("q", "b")])
    finally:
        release.set()
    assert all(not s.ok and "did not answer within 0.2 s" in s.error for s in scores)
    assert reward.stats["timeouts"] == 2 and reward.stats["judged"] == 0
    reward.generate = Judge(lambda p: "Score: 5")
    assert [s.value for s in reward.score([RewardItem("q", "a")])] == [pytest.approx(4 / 9)]


def test_backend_failures_are_per_item_errors():
    def broken(prompts):
        raise ConnectionError("judge server down")

    reward = JudgeReward(broken)
    (score,) = reward.score([RewardItem("q", "a")])
    assert "judge backend failed: ConnectionError: judge server down" in score.error
    short = JudgeReward(lambda prompts: ["Score: 1"])
    assert all("returned 1 answers for 2" in s.error
               for s in short.score([RewardItem("q", "a"), RewardItem("q", "b")]))
    assert reward.stats["backend_errors"] == 1 and short.stats["backend_errors"] == 2


def test_registry_builds_the_judge_and_explains_a_missing_model():
    reward = get_reward("judge", generate=Judge(_length_score), max_score=5)
    assert reward.name == "judge" and reward.version.startswith("judge:pointwise:")
    with pytest.raises(ValueError, match="needs a judge model"):
        get_reward("judge")
    with pytest.raises(ValueError, match="min_score"):
        JudgeReward(Judge(_length_score), min_score=5, max_score=5)
