"""``configs/lora_tiny.yaml`` through the real CLI (Ray, DeepSpeed, HF rollout engine): a full
CPT stage, then LoRA SFT, DPO and GRPO with KL, each a new adapter on the previous merged model,
then a full SFT stage on the merged LoRA result.
No reference learner starts (the reference is the adapter-disabled policy), RL syncs move the
adapter only, and every stage's outputs have the LoRA layout that ``rlsys export`` merges."""

from __future__ import annotations

import json

import pytest
import torch

from tests.e2e.helpers import max_weight_change, run_train, stage_rows

pytestmark = pytest.mark.slow


def test_lora_recipe_runs_every_stage_kind_and_chains(tmp_path):
    from transformers import AutoModelForCausalLM

    from rlsys.cli import main

    run_dir = tmp_path / "run"
    proc = run_train("configs/lora_tiny.yaml", run_dir, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:]
    stages = run_dir / "stages"
    for name in ("cpt", "sft_full"):  # the full stages (before and after the LoRA ones)
        assert not (stages / name / "final" / "adapter").exists()
    assert max_weight_change(stages / "grpo" / "final", stages / "sft_full" / "final") > 0
    for name in ("sft", "dpo", "grpo"):
        final = stages / name / "final"
        config = json.loads((final / "adapter" / "adapter_config.json").read_text())
        assert config["r"] == 8 and config["peft_type"] == "LORA"
        previous = {"sft": "cpt", "dpo": "sft", "grpo": "dpo"}[name]
        assert config["base_model_name_or_path"] == str(stages / previous / "final")
        assert max_weight_change(stages / previous / "final", final) > 0  # it trained
        ckpts = list((stages / name).glob("ckpt/**/adapter_model.safetensors"))
        assert ckpts and not list((stages / name).glob("ckpt/**/model.safetensors"))
    assert not list(run_dir.glob("logs/reference*"))  # no reference group was started
    grpo = stage_rows(run_dir, "grpo")
    assert [r["step"] for r in grpo] == [1, 2, 3]
    assert grpo[-1]["kl"] > 0 and all("time/sync" in r for r in grpo)
    dpo = stage_rows(run_dir, "dpo")
    assert dpo[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-6)  # policy == ref at step 1

    assert main(["export", "--merge", str(stages / "grpo"), str(tmp_path / "merged")]) == 0
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        exported = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(input_ids=ids)
        final = AutoModelForCausalLM.from_pretrained(stages / "grpo" / "final")(input_ids=ids)
    torch.testing.assert_close(exported.logits, final.logits, rtol=0, atol=1e-5)
