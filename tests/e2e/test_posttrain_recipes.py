"""End to end through the real CLI (``python -m rlsys.cli train``, local Ray): the GSPO recipe,
classic RLHF (SFT -> RM -> PPO rewarded by the RM just trained) and CPT -> merge.

Each recipe runs once per module and the assertions read that run. They check wiring (the
right models reach the right stages, metrics are logged, outputs load), not learning quality.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import RL_STEP_KEYS, max_weight_change, non_finite, run_train, stage_rows

pytestmark = pytest.mark.slow

RECIPES = {"gspo_tiny": "configs/gspo_tiny.yaml", "rlhf_tiny": "configs/rlhf_tiny.yaml",
           "merge_tiny": "configs/merge_tiny.yaml"}


class _Runs:
    def __init__(self, root: Path) -> None:
        self.root, self.done = root, {}

    def __call__(self, name: str) -> tuple[subprocess.CompletedProcess, Path]:
        if name not in self.done:
            run_dir = self.root / name
            self.done[name] = (run_train(RECIPES[name], run_dir, timeout=600), run_dir)
        proc, run_dir = self.done[name]
        assert proc.returncode == 0, proc.stdout[-4000:]
        return proc, run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> _Runs:
    """One CLI run per recipe, shared by the tests of this module."""
    return _Runs(tmp_path_factory.mktemp("posttrain_recipes"))


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "run_state.json").read_text())


def test_gspo_recipe_logs_sequence_ratios_and_trains(runs, tiny_model_dir):
    _, run_dir = runs("gspo_tiny")
    rows = stage_rows(run_dir, "gspo")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert non_finite(row, (*RL_STEP_KEYS, "seq_ratio_mean", "clip_frac")) == {}, row
    assert max_weight_change(tiny_model_dir, run_dir / "stages/gspo/final") > 1e-6
    assert _state(run_dir)["evals"][0]["label"] == "gspo"


def test_rlhf_recipe_chains_sft_rm_ppo(runs):
    """The rm stage hands the SFT model on (PPO starts from, and keeps its KL to, the SFT
    model), saves a sequence classifier with held-out pair accuracy, and PPO is rewarded by it:
    its per-step rewards are real-valued classifier scores, and it logs critic and KL terms."""
    from transformers import AutoModelForSequenceClassification

    from rewards.base import RewardItem
    from rewards.model import ModelReward

    _, run_dir = runs("rlhf_tiny")
    stages = _state(run_dir)["stages"]
    sft_final = str(run_dir / "stages/sft/final")
    assert stages["sft"]["checkpoint"] == sft_final
    assert stages["rm"]["checkpoint"] == sft_final
    rm = stages["rm"]
    assert rm["reward_model"] == str(run_dir / "stages/rm/final")
    accuracy = rm["heldout_after"]["prefs_heldout/pair_accuracy"]
    assert 0.0 <= accuracy <= 1.0
    model = AutoModelForSequenceClassification.from_pretrained(rm["reward_model"])
    assert model.config.num_labels == 1
    scores = [json.loads(line) for line in
              (run_dir / "stages/rm/eval_scores.jsonl").read_text().splitlines()]
    assert len(scores) == 16
    assert sum(s["chosen_score"] > s["rejected_score"] for s in scores) / 16 == accuracy
    # the model reward, as PPO's reward workers build it, scores with the stage's numbers
    reward = ModelReward(rm["reward_model"], max_length=256)
    items = [RewardItem(s["prompt"], s[key]) for s in scores[:4] for key in ("chosen", "rejected")]
    expected = [s[f"{key}_score"] for s in scores[:4] for key in ("chosen", "rejected")]
    assert [x.value for x in reward.score(items)] == pytest.approx(expected, abs=1e-4)
    rows = stage_rows(run_dir, "ppo")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert non_finite(row, (*RL_STEP_KEYS, "critic/loss")) == {}, row
    rewards = [r["reward/mean"] for r in rows]
    assert any(r not in (0.0, 1.0) for r in rewards), rewards
    assert max_weight_change(sft_final, run_dir / "stages/ppo/final") > 1e-6


def test_merge_recipe_slerps_cpt_back_to_the_start_with_evals(runs, tiny_model_dir):
    """Evals before CPT, after CPT and after the merge are recorded; every merged tensor is the
    SLERP (t = 0.5) of the CPT model's and the starting model's."""
    import torch
    from safetensors.torch import load_file

    from rlsys.algo.merge import slerp

    _, run_dir = runs("merge_tiny")
    assert [e["label"] for e in _state(run_dir)["evals"]] == ["base", "cpt", "merge"]
    cpt = load_file(str(run_dir / "stages/cpt/final/model.safetensors"))
    start = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    merged = load_file(str(run_dir / "stages/merge/final/model.safetensors"))
    assert merged.keys() == cpt.keys()
    for name, value in merged.items():
        torch.testing.assert_close(value, slerp([cpt[name], start[name]], t=0.5))
    assert max_weight_change(run_dir / "stages/cpt/final", run_dir / "stages/merge/final") > 0
