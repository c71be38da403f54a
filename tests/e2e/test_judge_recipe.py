"""Slow: ``configs/pairs_judge_tiny.yaml`` through the real CLI -- the tiny random Llama samples
candidates, SmolLM2-135M-Instruct judges them greedily in its own Ray worker pool, the best and
worst per prompt become DPO pairs, and a DPO stage trains on them."""

from __future__ import annotations

import json

import pytest

from rlsys.config import load_recipe
from rlsys.data.sources import load_records
from tests.e2e.helpers import REPO, run_train, stage_rows

pytestmark = pytest.mark.slow


def test_judge_ranks_candidates_into_pairs_that_dpo_trains_on(tmp_path):
    recipe = load_recipe(REPO / "configs/pairs_judge_tiny.yaml")
    gen = recipe.stages[0].generate
    run_dir = tmp_path / "run"
    proc = run_train("configs/pairs_judge_tiny.yaml", run_dir, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:]

    stats = json.loads((run_dir / "synthetic" / "pairs.stats.json").read_text())
    judge, dropped = stats["judge"], stats["dropped"]
    assert stats["generated"] == 4 * gen.k  # 4 prompts, k candidates each
    assert judge["mode"] == "pointwise" and judge["requests"] == stats["generated"]
    assert judge["judged"] + judge.get("cache_hits", 0) == judge["requests"]
    # every judge answer that did not parse (or came too late) is a counted, dropped sample
    failed = sum(judge.get(k, 0) for k in ("parse_errors", "timeouts", "backend_errors"))
    assert dropped.get("score_error", 0) == failed

    pairs = load_records(str(run_dir / "synthetic" / "pairs.jsonl"), kind="pair").records
    assert len(pairs) == stats["kept"] >= 1
    raw = [json.loads(line) for line in
           (run_dir / "synthetic" / "pairs.jsonl").read_text().splitlines()]
    for row in raw:
        assert 0.0 <= row["rejected_score"] < row["chosen_score"] <= 1.0  # normalised scores
        assert row["margin"] == pytest.approx(row["chosen_score"] - row["rejected_score"])
        assert row["chosen"] != row["rejected"]

    rows = stage_rows(run_dir, "dpo")
    assert [r["step"] for r in rows] == [1, 2]
    assert (run_dir / "stages" / "dpo" / "final" / "config.json").is_file()
