"""The judge worker pool on a real local Ray cluster with real models, decoding greedily.

* the tiny random Llama as the judge: sharded greedy answers are the same every time, its
  garbage answers are counted reward errors, and a worker past the answer deadline is
  restarted while its items become counted timeout errors;
* SmolLM2-135M-Instruct (the real offline model) as the judge: the same inputs give the same
  scores twice (a fresh reward, so nothing comes from the cache) and its answers parse; a pair
  and its mirror image share their two judge calls and get opposite preferences.
"""

from __future__ import annotations

import pytest
import ray

from actors.judge_pool import judge_reward, launch_judge_workers
from rewards import RewardItem

HALF_CPU = 0.5
ENGINE = {"max_batch_size": 16, "num_threads": 1}
# SmolLM2-135M answers this short form with "A is better ..." / "B ..." (see the recipe)
FEWSHOT_RUBRIC = ("Grade each answer from 1 to 10.\n\nQuestion: What is 1 + 1?\nAnswer: 2\n"
                  "Score: 10\n\nQuestion: What is 3 + 4?\nAnswer: fish tree blue\nScore: 1\n\n"
                  "Question: {{ prompt }}\nAnswer: {{ response }}\nScore:")
PAIR_RUBRIC = ("Question: {{ prompt }}\nAnswer A: {{ response_a }}\nAnswer B: {{ response_b }}"
               "\n\nWhich is better, A or B? Answer:")


@pytest.fixture(scope="module")
def tiny_judge(ray_cluster, tiny_model):
    pool = launch_judge_workers(2, "hf", tiny_model, max_new_tokens=6, engine_kwargs=ENGINE,
                                num_cpus=HALF_CPU, timeout_s=120)
    yield pool
    pool.close()


def test_greedy_answers_are_sharded_and_repeatable(tiny_judge):
    prompts = [f"Rate answer {i}. Score:" for i in range(5)]
    first = tiny_judge.complete(prompts)
    pids = {p["pid"] for p in ray.get([h.ping.remote() for h in tiny_judge.handles])}
    assert len(first) == 5 and len(pids) == 2 and pids == set(tiny_judge.pids)
    assert tiny_judge.complete(prompts) == first


def test_a_random_judge_gives_counted_errors_not_a_crash(tiny_judge):
    reward = judge_reward(tiny_judge)
    scores = reward.score([RewardItem(f"q{i}", f"r{i}") for i in range(4)])
    assert len(scores) == 4
    bad = [s for s in scores if not s.ok]
    assert all(s.value is None and s.error.startswith("judge: ") for s in bad)
    assert reward.stats["parse_errors"] == len(bad) and reward.stats["judged"] == 4


def test_a_late_worker_is_restarted_and_its_items_time_out(ray_cluster, tiny_model):
    # no Ray round trip plus a model forward finishes within a microsecond
    pool = launch_judge_workers(1, "hf", tiny_model, max_new_tokens=32, engine_kwargs=ENGINE,
                                num_cpus=HALF_CPU, timeout_s=120, answer_timeout_s=1e-6)
    try:
        old_pid = pool.pids[0]
        reward = judge_reward(pool)
        scores = reward.score([RewardItem("q", "a"), RewardItem("q", "b")])
        assert all(not s.ok and "did not answer" in s.error for s in scores)
        assert reward.stats["timeouts"] == 2
        assert pool.pids[0] != old_pid  # the busy worker was replaced
        pool.answer_timeout_s = 120.0
        assert len(pool.complete(["still serving?"])) == 1
    finally:
        pool.close()


def test_real_judge_is_deterministic(ray_cluster):
    from rlsys.modeling import resolve_model

    # raw few-shot completion (chat_template=False): the one form a 135M judge answers
    pool = launch_judge_workers(1, "hf", resolve_model("smollm2"), max_new_tokens=4,
                                chat_template=False, engine_kwargs=ENGINE, num_cpus=HALF_CPU,
                                timeout_s=300)
    items = [RewardItem("What is 2 + 3?", "5"), RewardItem("What is 2 + 3?", "banana"),
             RewardItem("What is 7 * 6?", "7 * 6 = 42"), RewardItem("What is 7 * 6?", "5"),
             RewardItem("What is 2 + 3?", "5")]
    try:
        runs = []
        for _ in range(2):  # a fresh reward each time: nothing comes from the cache
            reward = judge_reward(pool, rubric=FEWSHOT_RUBRIC)
            runs.append(([(s.value, s.error) for s in reward.score(items)], dict(reward.stats)))
        pair = judge_reward(pool, mode="pairwise", rubric=PAIR_RUBRIC)
        prefs = pair.prefer(["What is 2 + 3?"] * 2, ["5", "banana"], ["banana", "5"])
    finally:
        pool.close()
    (first, stats), (second, _) = runs
    assert first == second  # greedy: the same answers, the same scores
    assert stats["judged"] == 4 and stats["cache_hits"] == 1  # the repeated item
    assert stats.get("parse_errors", 0) == sum(e is not None for _, e in first)
    values = [v for v, _ in first if v is not None]
    assert values, first  # the real model's answers do parse into scores
    assert all(0.0 <= v <= 1.0 for v in values)
    # a pair and its mirror image: the swap makes them exact opposites whatever the bias
    assert pair.stats["judged"] == 2 and pair.stats["cache_hits"] == 2
    assert prefs[0].ok == prefs[1].ok
    if prefs[0].ok:
        assert prefs[0].value == -prefs[1].value
    else:
        assert set(prefs[0].error.split("; ")) == set(prefs[1].error.split("; "))
