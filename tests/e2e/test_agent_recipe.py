"""End to end: multi-turn (agentic) GRPO in ``tool_math`` (configs/agent_tiny.yaml, HF engine).

* The recipe runs through the CLI: per-step trajectory metrics, whole episodes in
  ``samples.jsonl`` (messages, turns, rewards), episode eval files, held-out accuracy.
* Killing the driver after the step-2 checkpoint and re-running resumes at step 2 and trains
  steps 3-4 on the same prompts, in the same order, as an uninterrupted run.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO, cli_env, run_train, stage_rows, train_command
from tests.e2e.test_resume import kill_run, step_checkpoint, wait_for

pytestmark = pytest.mark.slow

RECIPE = "configs/agent_tiny.yaml"
SETS = ("stages.grpo.steps=4", "checkpoint.every_n_steps=2", "stages.grpo.eval_after=false")


def step_prompts(run_dir: Path) -> dict[int, list[str]]:
    """Step -> prompts of the episodes logged in samples.jsonl (the last write of a step wins:
    a step replayed after a resume replaces what was logged before the kill)."""
    rows = [json.loads(line) for line in
            (run_dir / "stages" / "grpo" / "samples.jsonl").read_text().splitlines()]
    out: dict[int, list[str]] = {}
    for i, row in enumerate(rows):
        if i == 0 or rows[i - 1]["step"] != row["step"]:
            out[row["step"]] = []
        out[row["step"]].append(row["prompt"])
    return out


def test_agent_recipe_logs_trajectories_and_evaluates_episodes(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(RECIPE, run_dir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "held-out accuracy:" in proc.stdout
    rows = stage_rows(run_dir, "grpo")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert 1.0 <= row["turns/mean"] <= 3.0, row
        assert 0.0 <= row["truncated"] <= 1.0 and row["tool_calls/mean"] >= 0.0
        assert row["time/reward"] == 0.0  # the environment scored the episodes, no reward pool
    samples = [json.loads(line) for line in
               (run_dir / "stages" / "grpo" / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["messages"][0]["role"] == "system" for s in samples)
    for s in samples:
        assistant = [m for m in s["messages"] if m["role"] == "assistant"]
        assert len(assistant) == len(s["turns"]) >= 1
        assert s["reward"] in (0.0, 1.0) and s["answer"] is not None
    evals = json.loads((run_dir / "run_state.json").read_text())["evals"]
    assert evals[-1]["label"] == "grpo" and evals[-1]["prompts"] == 4
    episodes = (run_dir / "eval_samples" / "grpo-heldout.jsonl").read_text().splitlines()
    assert len(episodes) == 4 and all("turns" in json.loads(e) for e in episodes)


def test_async_episodes_are_at_most_one_version_stale(tmp_path):
    """``algo.async_rollout`` with ``env:``: the next step's episodes run while this one
    trains and load the new weights between turns (broadcast by learner rank 0); no sample
    is more than one policy version old, whole trajectories are trained and logged."""
    run_dir = tmp_path / "run"
    proc = run_train(RECIPE, run_dir, "stages.grpo.steps=3", "stages.grpo.eval_after=false",
                     "stages.grpo.algo.async_rollout=true", "checkpoint.every_n_steps=0",
                     timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    rows = stage_rows(run_dir, "grpo")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["staleness"] for r in rows] == [0.0, 1.0, 1.0], rows
    assert all(r["async/dropped_stale"] == 0.0 and r["sync/collective"] == 1.0 for r in rows)
    assert all(1.0 <= r["turns/mean"] <= 3.0 for r in rows)
    samples = [json.loads(line) for line in
               (run_dir / "stages" / "grpo" / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2, 3} and all(s["turns"] for s in samples)


def test_killed_agent_run_resumes_with_the_same_data_order(tmp_path):
    reference = tmp_path / "reference"
    proc = run_train(RECIPE, reference, *SETS, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]

    run_dir = tmp_path / "run"
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(train_command(RECIPE, run_dir, *SETS), cwd=REPO, env=cli_env(),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ckpt = step_checkpoint(run_dir, 2)
        saved = wait_for(lambda: (ckpt / "training_state" / "trainer_state.json").is_file(),
                         400, first)
    finally:
        kill_run(first)
        log.close()
    assert saved, (tmp_path / "first.log").read_text()[-4000:]
    assert not (run_dir / "stages" / "grpo" / "final").exists(), "finished before the kill"

    proc = run_train(RECIPE, run_dir, *SETS, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "resumed from" in proc.stdout and "at step 2" in proc.stdout
    assert [r["step"] for r in stage_rows(run_dir, "grpo")] == [1, 2, 3, 4]
    ours, theirs = step_prompts(run_dir), step_prompts(reference)
    assert sorted(ours) == sorted(theirs) == [1, 2, 3, 4]
    assert [ours[s] for s in (3, 4)] == [theirs[s] for s in (3, 4)]


def test_rejection_sampling_in_an_env_feeds_sft_with_whole_conversations(tmp_path):
    """``configs/agent_rs_tiny.yaml``: k episodes per problem in ``tool_math``, the kept ones
    written as ``messages`` records (system, user, assistant turns, tool observations), then an
    SFT stage trains on that file."""
    from rlsys.data.sources import load_records

    run_dir = tmp_path / "run"
    proc = run_train("configs/agent_rs_tiny.yaml", run_dir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    stats = json.loads((run_dir / "synthetic" / "rs.stats.json").read_text())
    assert stats["generated"] == 8 * 2  # 8 problems, k = 2 episodes each
    assert stats["kept"] + sum(stats["dropped"].values()) == stats["generated"]
    records = load_records(str(run_dir / "synthetic" / "rs.jsonl"), kind="sft").records
    assert len(records) == stats["kept"] >= 1
    for record in records:
        roles = [m["role"] for m in record["messages"]]
        assert roles[:2] == ["system", "user"] and roles[-1] == "assistant", roles
        assert set(roles[2:]) <= {"assistant", "tool"}
        assert record["answer"] is not None
    sft_rows = stage_rows(run_dir, "sft")
    assert [r["step"] for r in sft_rows] == [1, 2] and all(r["loss"] > 0 for r in sft_rows)
