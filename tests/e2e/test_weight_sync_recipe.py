"""End to end: the tiny GRPO recipe through the real CLI with ``rollout.weight_sync=collective``
(learner rank 0 broadcasts to two rollout workers over gloo) and with ``object_store`` (the
driver path). Both finish, and because both deliver the learner's exact weights the two runs
sample the same tokens after the sync (step 2's responses in ``samples.jsonl`` are drawn with
seeded sampling from the synced weights; the learner moved after step 1), every step's reward,
loss and entropy agree, and the final checkpoints are identical. An ``ipc`` request on CPU
stops before any learner starts, with the reason."""

from __future__ import annotations

import json

import pytest
import torch

from tests.e2e.helpers import max_weight_change, run_train, stage_rows

pytestmark = pytest.mark.slow

RECIPE = "configs/grpo_tiny.yaml"
COMMON = ("rollout.num_workers=2", "rollout.num_cpus_per_worker=0.5", "stages.0.steps=2",
          "checkpoint.every_n_steps=0", "stages.0.eval_after=false")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("weight-sync")
    out = {}
    for mode in ("collective", "object_store"):
        run_dir = root / mode
        result = run_train(RECIPE, run_dir, *COMMON, f"rollout.weight_sync={mode}", timeout=600)
        assert result.returncode == 0, result.stdout[-3000:]
        out[mode] = run_dir
    return out


def test_collective_and_object_store_runs_agree_step_by_step(runs):
    collective = stage_rows(runs["collective"], "grpo")
    object_store = stage_rows(runs["object_store"], "grpo")
    assert [r["step"] for r in collective] == [1, 2] == [r["step"] for r in object_store]
    samples = {mode: [json.loads(line) for line in
                      (run / "stages/grpo/samples.jsonl").read_text().splitlines()]
               for mode, run in runs.items()}
    after_sync = [[s["response"] for s in samples[mode] if s["step"] == 2] for mode in runs]
    assert after_sync[0] and after_sync[0] == after_sync[1]
    for a, b in zip(collective, object_store, strict=True):
        assert a["reward/mean"] == b["reward/mean"]
        assert a["entropy"] == pytest.approx(b["entropy"], rel=1e-5)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
        assert a["time/sync"] > 0
    final = "stages/grpo/final"
    assert max_weight_change(runs["collective"] / final, runs["object_store"] / final) <= 1e-6
    assert torch.isfinite(torch.tensor([r["loss"] for r in collective])).all()


def test_ipc_on_cpu_is_refused_before_the_stage_starts(tmp_path):
    result = run_train(RECIPE, tmp_path / "ipc", *COMMON, "rollout.weight_sync=ipc", timeout=300)
    assert result.returncode != 0
    assert "rollout.weight_sync=ipc needs the learner and rollout workers on one GPU" in \
        result.stdout
