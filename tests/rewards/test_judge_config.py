"""The judge's recipe section: ``stages[].generate.judge`` is checked when a recipe loads, so a
bad rubric or a misplaced judge is a one-line user error (exit 2), never a failure mid-run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlsys.config import load_recipe
from rlsys.config.load import RecipeError, recipe_from_dict

REPO = Path(__file__).resolve().parents[2]


def _recipe(judge: dict, kind: str = "preference_pairs", **top) -> dict:
    return {"name": "j", "stages": [{"name": "pairs", "kind": kind,
                                     "generate": {"output": "p.jsonl", "judge": judge}}], **top}


def _errors(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    return info.value.errors


def test_the_shipped_judge_recipe_loads():
    judge = load_recipe(REPO / "configs/pairs_judge_tiny.yaml").stages[0].generate.judge
    assert judge.model == "smollm2" and judge.mode == "pointwise" and not judge.chat_template
    assert recipe_from_dict(_recipe({"model": "smollm2", "mode": "pairwise"})).stages[0]


@pytest.mark.parametrize("judge,kind,path,reason", [
    ({"model": "m", "rubric": "{{ prompt }} {{ answer }}"}, "preference_pairs",
     "stages.0.generate.judge.rubric", "unknown variable(s) ['answer']"),
    ({"model": "m", "mode": "pairwise", "rubric": "{{ response }}"}, "preference_pairs",
     "stages.0.generate.judge.rubric", "unknown variable(s) ['response']"),
    ({"model": "m", "rubric": "{% for %}{{ response }}"}, "preference_pairs",
     "stages.0.generate.judge.rubric", "not a valid Jinja template"),
    ({"model": "m", "min_score": 5, "max_score": 5}, "preference_pairs",
     "stages.0.generate.judge", "min_score must be < max_score"),
    ({"model": "m", "mode": "listwise"}, "preference_pairs", "stages.0.generate.judge.mode",
     "Input should be"),
    ({"model": "m"}, "rejection_sampling", "stages.0", "only for kind 'preference_pairs'"),
    ({"mode": "pairwise"}, "preference_pairs", "stages.0.generate.judge.model", "required"),
])
def test_bad_judge_sections_name_their_field(judge, kind, path, reason):
    errors = _errors(_recipe(judge, kind))
    assert any(p == path and reason in msg for p, msg in errors), errors


def test_the_judge_reward_is_not_a_recipe_reward():
    errors = _errors({"name": "j", "reward": {"type": "judge"},
                      "stages": [{"name": "s", "kind": "sft"}]})
    assert errors[0][0] == "reward" and "generate.judge" in errors[0][1]


def test_cli_validate_exits_2_with_the_rubric_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_recipe({"model": "m", "rubric": "{{ respons }}"})))
    out = subprocess.run([sys.executable, "-m", "rlsys.cli", "validate", str(path)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2, out.stderr
    assert "stages.0.generate.judge.rubric" in out.stderr and "respons" in out.stderr
