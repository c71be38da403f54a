"""Tier 1: the ``merge`` stage on real tiny HF checkpoints (no Ray): merged weights equal the
formula computed here on the loaded tensors, the output loads with ``transformers``, model
references resolve, and checkpoints of another shape are refused naming the first tensor."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rlsys.config import recipe_from_dict
from rlsys.controller.context import RunContext
from rlsys.controller.merge import run_merge_stage
from rlsys.data.sources import DataError
from rlsys.modeling import resolve_model
from rlsys.modeling.resolve import random_llama_dir


def _ctx(tmp_path, merge: dict) -> tuple[RunContext, object]:
    """A context (no Ray) of a recipe whose last stage merges; "prev" is an earlier stage."""
    recipe = recipe_from_dict({
        "name": "merge_test", "model": {"path": "tiny-llama:1"},
        "stages": [{"name": "prev", "kind": "eval"},
                   {"name": "merge", "kind": "merge", "merge": merge}],
    })
    return RunContext(recipe, tmp_path / "run", start_ray=False), recipe.stages[-1]


def test_linear_merge_of_two_tiny_llamas(tmp_path):
    """models [input (seed 2) weight 1, base (seed 1) weight 3]: every merged float tensor is
    (1 * x2 + 3 * x1) / 4; the directory loads as a causal LM with those weights."""
    from transformers import AutoModelForCausalLM

    seed2 = resolve_model("tiny-llama:2")
    ctx, stage = _ctx(tmp_path, {"method": "linear", "models": [
        {"path": "input", "weight": 1.0}, {"path": "base", "weight": 3.0}]})
    result = run_merge_stage(ctx, stage, seed2)
    x1 = load_file(f"{resolve_model('tiny-llama:1')}/model.safetensors")
    x2 = load_file(f"{seed2}/model.safetensors")
    merged = load_file(f"{result['checkpoint']}/model.safetensors")
    assert set(merged) == set(x1)
    for name, value in merged.items():
        torch.testing.assert_close(value, (x2[name] + 3 * x1[name]) / 4, rtol=1e-6, atol=1e-7)
    model = AutoModelForCausalLM.from_pretrained(result["checkpoint"])
    torch.testing.assert_close(model.model.embed_tokens.weight.detach(),
                               merged["model.embed_tokens.weight"])
    assert (tmp_path / "run/stages/merge/final/tokenizer.json").is_file()


def test_task_arithmetic_with_an_earlier_stage_reference(tmp_path):
    """base seed 1, models [stage:prev (a copy of seed 2)] with scale 0.5: x1 + 0.5 (x2 - x1)."""
    import shutil

    ctx, stage = _ctx(tmp_path, {"method": "task_arithmetic", "base": "base", "scale": 0.5,
                                 "models": [{"path": "stage:prev"}]})
    with pytest.raises(FileNotFoundError, match="stage 'prev' has no final model"):
        run_merge_stage(ctx, stage, resolve_model("tiny-llama:3"))
    shutil.copytree(resolve_model("tiny-llama:2"), tmp_path / "run/stages/prev/final")
    result = run_merge_stage(ctx, stage, resolve_model("tiny-llama:3"))
    x1 = load_file(f"{resolve_model('tiny-llama:1')}/model.safetensors")
    x2 = load_file(f"{resolve_model('tiny-llama:2')}/model.safetensors")
    merged = load_file(f"{result['checkpoint']}/model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(merged[name], x1[name] + 0.5 * (x2[name] - x1[name]))


def test_checkpoints_of_another_shape_name_the_first_differing_tensor(tmp_path):
    wide = random_llama_dir("tiny-llama-merge-wide", hidden_size=32, intermediate_size=128)
    ctx, stage = _ctx(tmp_path, {"method": "slerp", "models": [{"path": "base"},
                                                                {"path": "input"}]})
    with pytest.raises(DataError, match=r"tensor 'model\.embed_tokens\.weight' differs in "
                                        r"shape: \(\d+, 64\) in models\[0\].*\(\d+, 32\)"):
        run_merge_stage(ctx, stage, wide)
    assert not (tmp_path / "run/stages/merge/final").exists()
