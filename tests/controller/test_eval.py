"""Tier 0: the eval estimators (pass@k, maj@k), ``summarize`` on a hand-counted set, the table.

Every expected number is derived by hand in the test's docstring or comments.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import pytest

from rlsys.controller.evaluate import format_table, majority_correct, pass_at_k, summarize


def _pass_at_k_by_enumeration(n: int, c: int, k: int) -> float:
    """Fraction of the size-k subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_enumeration_over_subsets(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_by_enumeration(n, c, k),
                                                       rel=1e-12, abs=1e-12)


def test_pass_at_k_closed_forms() -> None:
    """pass@1 = c/n; pass@n = 1 iff any correct; no correct -> 0; C(n-c,k)/C(n,k) by hand:
    n=10, c=3, k=2: 1 - C(7,2)/C(10,2) = 1 - 21/45 = 24/45."""
    for n in range(1, 10):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n)
            assert pass_at_k(n, c, n) == (1.0 if c else 0.0)
    assert pass_at_k(10, 3, 2) == pytest.approx(24 / 45)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - comb(7, 2) / comb(10, 2))


@pytest.mark.parametrize("n,c,k", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_bad_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


def test_majority_vote() -> None:
    # plurality answer "7" (2 votes) is correct
    assert majority_correct(["7", "8", "7", "9"], [True, False, True, False])
    # plurality "8" is wrong even though a correct sample exists
    assert not majority_correct(["7", "8", "8", "9"], [True, False, False, False])
    # tie 1-1: the first seen ("8") wins
    assert not majority_correct(["8", "7"], [False, True])
    assert majority_correct(["7", "8"], [True, False])
    # unparsed answers do not vote; nothing parsed -> not correct
    assert majority_correct([None, None, None, "7"], [False, False, False, True])
    assert not majority_correct([None, None], [False, False])


def _hand_built_samples() -> list[dict]:
    """20 prompts x 4 samples:

    * p0-p4   (5): 4/4 correct, answers "a" x4              -> maj correct
    * p5-p9   (5): 0/4 correct, answers w1..w4, 16 tokens, truncated
    * p10-p13 (4): 1/4 correct, answers ok,x,x,y             -> maj "x" wrong
    * p14-p16 (3): 2/4 correct, answers ok,ok,x,y            -> maj correct
    * p17-p19 (3): 3/4 correct, answers ok,ok,ok,x           -> maj correct
    """
    plan = ([(["a"] * 4, [1, 1, 1, 1])] * 5 + [(["w1", "w2", "w3", "w4"], [0, 0, 0, 0])] * 5
            + [(["ok", "x", "x", "y"], [1, 0, 0, 0])] * 4
            + [(["ok", "ok", "x", "y"], [1, 1, 0, 0])] * 3
            + [(["ok", "ok", "ok", "x"], [1, 1, 1, 0])] * 3)
    samples = []
    for p, (answers, correct) in enumerate(plan):
        wrong_block = 5 <= p <= 9
        for answer, ok in zip(answers, correct, strict=True):
            samples.append({"prompt_id": ("src", p), "correct": bool(ok), "answer": answer,
                            "length": 16 if wrong_block else 8, "truncated": wrong_block})
    return samples


def test_summarize_agrees_with_hand_count() -> None:
    """Hand count over the 20 prompts of ``_hand_built_samples``:

    pass@1 = (5*1 + 5*0 + 4*1/4 + 3*2/4 + 3*3/4) / 20 = 9.75 / 20 = 0.4875
    pass@4 = prompts with any correct = (5 + 4 + 3 + 3) / 20 = 0.75
    maj@4  = (5 + 0 + 0 + 3 + 3) / 20 = 0.55
    correct samples = 20 + 0 + 4 + 6 + 9 = 39 of 80 -> accuracy 0.4875
    mean length = (20*16 + 60*8) / 80 = 10; truncation rate = 20/80 = 0.25
    """
    out = summarize(_hand_built_samples(), k=4)
    assert out["prompts"] == 20 and out["samples"] == 80 and out["k"] == 4
    assert out["pass@1"] == pytest.approx(0.4875)
    assert out["pass@4"] == pytest.approx(0.75)
    assert out["maj@4"] == pytest.approx(0.55)
    assert (out["correct"], out["total"]) == (39, 80)
    assert out["accuracy"] == pytest.approx(0.4875)
    assert out["mean_length"] == pytest.approx(10.0)
    assert out["truncation_rate"] == pytest.approx(0.25)


def test_summarize_pass_at_2_from_four_samples() -> None:
    """pass@2 with n=4 per prompt: 1 - C(4-c,2)/C(4,2) = 1 (c=4), 0 (c=0), 1 - 3/6 = 0.5 (c=1),
    1 - 1/6 = 5/6 (c=2), 1 (c=3); mean = (5 + 0 + 4*0.5 + 3*5/6 + 3) / 20 = 12.5/20 = 0.625."""
    out = summarize(_hand_built_samples(), k=2)
    assert out["pass@2"] == pytest.approx(0.625)
    assert out["pass@1"] == pytest.approx(0.4875)


def test_format_table_shows_the_numbers() -> None:
    summary = summarize(_hand_built_samples(), k=4)
    table = format_table({"sources": {"heldout": summary}, "overall": summary})
    lines = table.splitlines()
    assert len(lines) == 3
    for column in ("source", "prompts", "pass@1", "pass@4", "maj@4", "mean_length",
                   "truncation_rate"):
        assert column in lines[0]
    for name, line in zip(("heldout", "overall"), lines[1:], strict=True):
        cells = line.split()
        assert cells[0] == name
        # prompts, pass@1, pass@4, maj@4, mean_length, truncation_rate
        assert cells[1] == "20"
        assert float(cells[2]) == pytest.approx(0.4875, abs=1e-3)
        assert cells[3:] == ["0.750", "0.550", "10.000", "0.250"]


def test_chunked_eval_generation_keeps_prompt_order_and_indices(tiny_model_dir, capsys):
    """``evaluate`` generates in chunks (for its progress bar): the completions come back in
    prompt order with global ``prompt_index``, greedy outputs equal one unchunked call, and
    the bar reports every prompt."""
    from actors.rollout import RolloutWorker
    from rlsys.controller.evaluate import eval_chunk
    from rlsys.controller.generation import generate_in_chunks

    worker = RolloutWorker("hf", tiny_model_dir)
    prompts = [f"What is {i} + {i}?" for i in range(11)]
    sampling = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 4}
    assert eval_chunk(worker, 4) == 8  # 32 sequences / 4 samples, one worker: two chunks
    got = generate_in_chunks(worker, prompts, chunk=eval_chunk(worker, 4), n=4, seed=0,
                             progress="eval t", **sampling)
    want = worker.generate(prompts, n=4, seed=0, **sampling)
    assert [c.prompt_index for c in got] == [i for i in range(11) for _ in range(4)]
    assert [c.response_ids for c in got] == [c.response_ids for c in want]
    assert "11/11" in capsys.readouterr().out
