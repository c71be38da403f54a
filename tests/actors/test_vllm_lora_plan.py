"""How adapter syncs reach a vLLM engine (``actors.engines.vllm_lora``), without starting vLLM:
the ``auto|native|merge`` plan, the rank vLLM is started with, and the PEFT config of a synced
adapter (peft reads it back)."""

from __future__ import annotations

import json

import pytest

from actors.engines.vllm_lora import adapter_config, plan_lora_sync, vllm_lora_rank


@pytest.mark.parametrize(("r", "expected"), [(1, 1), (2, 8), (8, 8), (9, 16), (16, 16),
                                             (300, 320), (512, 512)])
def test_rank_rounds_up_to_one_vllm_accepts(r, expected):
    assert vllm_lora_rank(r) == expected


def test_rank_above_vllms_largest_is_refused():
    with pytest.raises(ValueError, match="513 exceeds vLLM's largest max_lora_rank 512"):
        vllm_lora_rank(513)


def test_auto_is_native_with_a_rank_and_no_modules_to_save():
    assert plan_lora_sync("auto", 16, [])[0] is True
    assert plan_lora_sync("native", 4, [])[0] is True


@pytest.mark.parametrize(("mode", "rank", "to_save", "why"), [
    ("merge", 16, [], "lora_sync: merge"),
    ("auto", None, [], "no LoRA rank"),
    ("auto", 16, ["lm_head"], "modules_to_save ['lm_head']"),
])
def test_merge_when_asked_or_native_cannot_serve(mode, rank, to_save, why):
    native, reason = plan_lora_sync(mode, rank, to_save)
    assert native is False and why in reason


@pytest.mark.parametrize(("mode", "rank", "to_save", "message"), [
    ("native", None, [], "needs max_lora_rank"),
    ("native", 16, ["embed_tokens"], "cannot carry modules_to_save"),
    ("native", 1000, [], "exceeds vLLM's largest"),
    ("sometimes", 16, [], "lora_sync must be one of"),
])
def test_native_refuses_what_it_cannot_serve(mode, rank, to_save, message):
    with pytest.raises(ValueError, match=message):
        plan_lora_sync(mode, rank, to_save)


def test_adapter_config_is_what_peft_reads(tmp_path):
    from peft import LoraConfig

    layout = {"r": 4, "lora_alpha": 8.0, "target_modules": ["q_proj", "v_proj"],
              "modules_to_save": None}
    (tmp_path / "adapter_config.json").write_text(json.dumps(adapter_config(layout, "base")))
    config = LoraConfig.from_pretrained(str(tmp_path))
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (4, 8.0,
                                                                         {"q_proj", "v_proj"})
    assert config.base_model_name_or_path == "base" and config.task_type == "CAUSAL_LM"
