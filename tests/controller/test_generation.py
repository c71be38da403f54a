"""Tier 0: the shared generation helper with an in-process pool that records its calls.

The real pools are exercised by ``tests/actors/test_launch.py`` and the e2e recipes; here the
chunking, the per-chunk seed rule and the ``RewardItem`` mapping are checked exactly.
"""

from __future__ import annotations

import pytest

from rlsys.controller.generation import generate_in_chunks, reward_items
from rlsys.types import Completion


class RecordingPool:
    """``generate`` returns ``n`` completions per prompt whose text names prompt and seed."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int | None]] = []

    def generate(self, prompts, *, n, seed, **sampling):
        self.calls.append((list(prompts), seed))
        return [Completion(i, [1], [2], f"{p}|seed={seed}|{j}", None, "stop")
                for i, p in enumerate(prompts) for j in range(n)]


def test_chunks_are_seeded_by_their_first_index_and_indices_made_global() -> None:
    pool = RecordingPool()
    prompts = [f"p{i}" for i in range(7)]
    out = generate_in_chunks(pool, prompts, chunk=3, n=2, seed=100, temperature=1.0)
    assert pool.calls == [(["p0", "p1", "p2"], 100), (["p3", "p4", "p5"], 103), (["p6"], 106)]
    assert [c.prompt_index for c in out] == [i for i in range(7) for _ in range(2)]
    assert [c.text.split("|")[0] for c in out] == [p for p in prompts for _ in range(2)]


def test_no_seed_stays_unseeded_and_bad_chunk_is_rejected() -> None:
    pool = RecordingPool()
    generate_in_chunks(pool, ["a", "b"], chunk=1, n=1, seed=None)
    assert [seed for _, seed in pool.calls] == [None, None]
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        generate_in_chunks(pool, ["a"], chunk=0, n=1, seed=0)


def test_progress_bar_counts_prompts_only_with_several_chunks(capsys) -> None:
    generate_in_chunks(RecordingPool(), ["a", "b", "c"], chunk=2, n=1, seed=0, progress="ev")
    assert "3/3" in capsys.readouterr().out
    generate_in_chunks(RecordingPool(), ["a", "b"], chunk=2, n=1, seed=0, progress="ev")
    assert capsys.readouterr().out == ""


def test_reward_items_follow_prompt_index() -> None:
    records = [{"prompt": "1+1?", "answer": "2"}, {"prompt": "say hi"}]
    comps = [Completion(1, [1], [2], "hi", None, "stop"),
             Completion(0, [1], [2], "2", None, "stop")]
    items = reward_items(records, comps)
    assert [(i.prompt, i.response, i.reference) for i in items] == \
        [("say hi", "hi", None), ("1+1?", "2", "2")]
