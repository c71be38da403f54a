"""End to end (slow): bounded-staleness async GRPO through the real CLI with a local Ray.

``configs/grpo_async_tiny.yaml`` (two rollout workers, the tiny random Llama) with
``max_staleness: 2`` (a buffer of two generations in flight) and partial rollouts of 4 tokens:
weights are published without waiting and pulled by the workers between chunks. Every step's
``staleness`` (the oldest token of any trained sample, in policy versions behind the learner)
must stay within k, the drop counter must be logged, and the run must finish cleanly.
"""

from __future__ import annotations

import pytest

from tests.e2e.helpers import RL_STEP_KEYS, non_finite, run_train, stage_rows

pytestmark = pytest.mark.slow

K = 2


def test_async_grpo_never_trains_on_samples_older_than_k(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train("configs/grpo_async_tiny.yaml", run_dir, "stages.grpo.steps=4",
                     f"stages.grpo.algo.max_staleness={K}",
                     "stages.grpo.algo.partial_rollout_chunk=4", timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    rows = stage_rows(run_dir, "grpo")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert non_finite(row, RL_STEP_KEYS) == {}, row
        assert 0 <= row["staleness"] <= K, row
        assert row["async/staleness_mean"] <= row["staleness"], row
        assert row["async/dropped_stale"] >= 0 and row["async/in_flight"] <= K, row
    assert rows[0]["staleness"] == 0  # the first step trains on the initial weights' samples
