"""Typed recipes: strictness, cross-field rules, registry names, overrides, and the CLI."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlsys.config import RecipeError, load_recipe, recipe_from_dict
from rlsys.config.load import apply_override, parse_override

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

BASE = {
    "name": "t",
    "data": {"sources": [{"name": "arith", "generator": "arithmetic"}]},
    "stages": [{"name": "sft", "kind": "sft", "steps": 2},
               {"name": "grpo", "kind": "grpo", "steps": 2,
                "algo": {"clip_low": 0.2, "clip_high": 0.28}}],
}


def _errors(data):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    return info.value.errors


def _with(path, value):
    import copy

    data = copy.deepcopy(BASE)
    apply_override(data, path.split("."), value)
    return data


def test_base_recipe_is_valid_and_frozen():
    recipe = recipe_from_dict(BASE)
    assert recipe.stages[1].estimator == "grpo"
    with pytest.raises(Exception, match="frozen"):
        recipe.seed = 3


@pytest.mark.parametrize("path,value,field,reason", [
    ("stages.0.stepz", 3, "stages.0.stepz", "Extra inputs are not permitted"),
    ("stages.0.steps", "many", "stages.0.steps", "valid integer"),
    ("stages.1.algo.estimator", "grpoo", "stages.1.algo.estimator", "unknown estimator 'grpoo'"),
    ("stages.1.algo.clip_low", -1, "stages.1.algo.clip_low", "greater than 0"),
    ("stages.1.algo.objective", "nope", "stages.1.algo.objective", "known: "),
    ("reward.type", "nope", "reward.type", "unknown reward 'nope'"),
    ("stages.0.kind", "rlhf", "stages.0.kind", "Input should be"),
    ("learner.schedule.name", "linear", "learner.schedule.name", "Input should be"),
])
def test_bad_field_names_the_path(path, value, field, reason):
    errors = _errors(_with(path, value))
    assert any(f == field and reason in msg for f, msg in errors), errors


def test_cross_field_rules():
    assert any("unknown source" in m for _, m in _errors(_with("stages.0.sources", ["zz"])))
    assert any("'algo' is only for RL" in m for _, m in _errors(_with("stages.0.algo", {})))
    assert any("rollout.n" in m for _, m in _errors(_with("rollout.n", 1)))
    ppo = _with("stages.1.kind", "ppo")
    recipe_from_dict(ppo)  # ppo defaults to gae
    apply_override(ppo, ["stages", "1", "algo", "estimator"], "grpo")
    assert any("ppo needs the 'gae'" in m for _, m in _errors(ppo))


def test_every_error_is_reported_at_once():
    data = _with("stages.0.stepz", 1)
    apply_override(data, ["learner", "lr"], -1)
    fields = {f for f, _ in _errors(data)}
    assert {"stages.0.stepz", "learner.lr"} <= fields


def test_overrides_parse_yaml_and_address_stages_by_name(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(BASE))
    recipe = load_recipe(p, ["stages.grpo.steps=7", "rollout.engine=vllm", "learner.lr=3e-4",
                             "stages.1.algo.clip_c=3"])
    assert recipe.stages[1].steps == 7 and recipe.rollout.engine == "vllm"
    assert recipe.learner.lr == 3e-4 and recipe.stages[1].algo.clip_c == 3
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    with pytest.raises(RecipeError, match="key.path=value"):
        parse_override("novalue")


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_shipped_recipe_validates(config):
    out = subprocess.run([sys.executable, "-m", "rlsys.cli", "validate", str(config)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_configs_exist():
    assert len(CONFIGS) >= 1


def test_cli_validate_reports_errors_without_traceback(tmp_path):
    bad = _with("stages.1.algo.clip_low", -1)
    bad["stages"][0]["stepz"] = 1
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad))
    out = subprocess.run([sys.executable, "-m", "rlsys.cli", "validate", str(p)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "stages.1.algo.clip_low" in out.stderr and "stages.0.stepz" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "rlsys.cli", "--help"], capture_output=True,
                         text=True, check=True)
    for cmd in ("train", "validate", "eval", "serve"):
        assert cmd in out.stdout
