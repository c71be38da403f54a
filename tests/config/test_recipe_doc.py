"""The README's recipe table, ``rlsys config schema`` and ``rlsys config show`` agree with the
schema; honest fields (a field that is accepted does something, or is refused with a reason)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlsys.config import RecipeError, load_recipe, recipe_from_dict
from rlsys.config.doc import RECIPE_TABLE_END, RECIPE_TABLE_START, recipe_table, replace_table
from rlsys.config.schema import CANONICAL_FIELDS, SOURCE_FORMATS, Recipe
from rlsys.data import sources

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
GRPO = {"name": "t", "data": {"sources": [{"name": "a", "generator": "arithmetic",
                                           "kind": "prompt"}]},
        "stages": [{"name": "grpo", "kind": "grpo"}]}


def _rlsys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlsys.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def _leaf_paths(schema: dict, node: dict, prefix: str) -> set[str]:
    """Every leaf field path of the JSON schema (the same walk the table does)."""
    paths: set[str] = set()
    for name, prop in node.get("properties", {}).items():
        ref = prop.get("$ref") or next((a["$ref"] for a in prop.get("anyOf", []) if "$ref" in a),
                                       None) or prop.get("items", {}).get("$ref")
        suffix = "[]" if prop.get("type") == "array" and "$ref" in prop.get("items", {}) else ""
        if ref:
            sub = schema["$defs"][ref.rsplit("/", 1)[1]]
            paths |= _leaf_paths(schema, sub, f"{prefix}{name}{suffix}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert replace_table(readme) == readme, "README recipe table is stale: run " \
                                            "python scripts/recipe_table.py"
    table = readme[readme.index(RECIPE_TABLE_START):readme.index(RECIPE_TABLE_END)]
    assert recipe_table() in table


def test_table_lists_every_schema_field_once():
    schema = Recipe.model_json_schema()
    rows = [line.split("|")[1].strip().strip("`") for line in recipe_table().splitlines()[2:]
            if "| section |" not in line]
    assert len(rows) == len(set(rows))
    assert set(rows) == _leaf_paths(schema, schema, "")
    assert "stages[].algo.clip_high" in rows and "data.sources[].on_error" in rows


def test_script_rewrites_a_stale_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{RECIPE_TABLE_START}\n| old |\n{RECIPE_TABLE_END}\nrest\n")
    script = [sys.executable, str(ROOT / "scripts" / "recipe_table.py"), "--readme", str(readme)]
    assert subprocess.run([*script, "--check"], capture_output=True).returncode == 1
    assert subprocess.run(script, capture_output=True).returncode == 0
    text = readme.read_text()
    assert "| old |" not in text and recipe_table() in text and text.endswith("rest\n")
    assert subprocess.run([*script, "--check"], capture_output=True).returncode == 0


def test_config_schema_is_the_pydantic_json_schema():
    out = _rlsys("config", "schema")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == Recipe.model_json_schema()


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config_show_round_trips(config, tmp_path):
    """``config show`` prints every default; loading its output gives the same recipe."""
    from rlsys.config.doc import resolved_dict

    recipe = load_recipe(config)
    shown = resolved_dict(recipe)
    again = recipe_from_dict(shown)
    assert resolved_dict(again) == shown
    assert again.model_dump(exclude={"stages"}) == recipe.model_dump(exclude={"stages"})
    for stage, back, out in zip(recipe.stages, again.stages, shown["stages"], strict=True):
        assert back.model_dump(exclude={"algo", "dpo"}) == stage.model_dump(exclude={"algo", "dpo"})
        if out.get("algo") is not None:  # every RL option spelled out, estimator resolved
            assert set(out["algo"]) == set(type(stage.algo_or_default).model_fields)
            assert back.estimator == stage.estimator == out["algo"]["estimator"]
            assert back.algo.model_dump(exclude={"estimator"}) == \
                stage.algo_or_default.model_dump(exclude={"estimator"})


def test_config_show_applies_overrides_and_fills_defaults():
    out = _rlsys("config", "show", "configs/grpo_tiny.yaml", "--set", "rollout.n=6")
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert shown["rollout"]["n"] == 6
    assert shown["cluster"]["timeout_s"] == 900.0  # a default the file does not set
    assert shown["stages"][0]["algo"]["estimator"] == "grpo"
    assert "batch_size" not in shown["stages"][0]  # RL stages do not take it


def test_config_show_bad_recipe_is_a_user_error():
    out = _rlsys("config", "show", "configs/grpo_tiny.yaml", "--set", "rollout.nn=6")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("rlsys config: error: configs/grpo_tiny.yaml: rollout.nn: "
                                  "Extra inputs are not permitted")


def test_schema_lists_match_the_data_layer():
    assert SOURCE_FORMATS == sources.FORMATS
    assert CANONICAL_FIELDS == sources.CANONICAL_FIELDS
    kinds = Recipe.model_json_schema()["$defs"]["SourceConfig"]["properties"]["kind"]["enum"]
    assert set(kinds) == set(sources.KIND_REQUIREMENTS)


@pytest.mark.parametrize("change,field,reason", [
    ({"eval_every": 2}, "stages.0", "eval_every: not supported"),
    ({"batch_size": 4}, "stages.0", "set rollout.prompts_per_step"),
    ({"algo": {"max_staleness": 2, "async_rollout": True}}, "stages.0.algo", "set tis_cap"),
    ({"algo": {"max_staleness": 2}}, "stages.0.algo", "only used with async_rollout"),
])
def test_unimplemented_fields_are_refused_with_a_reason(change, field, reason):
    data = {**GRPO, "stages": [{**GRPO["stages"][0], **change}]}
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data)
    assert any(f == field and reason in msg for f, msg in info.value.errors), info.value.errors


def test_batch_size_is_kept_where_it_means_examples_per_step():
    data = {**GRPO, "stages": [{"name": "sft", "kind": "sft", "batch_size": 4}]}
    assert recipe_from_dict(data).stages[0].batch_size == 4
    grpo = recipe_from_dict({**GRPO, "stages": [{"name": "g", "kind": "grpo",
                                                 "algo": {"max_staleness": 1}}]})
    assert grpo.stages[0].algo.max_staleness == 1


def test_every_source_format_the_schema_accepts_is_readable(tmp_path):
    """``format`` accepts only what ``load_records`` reads (``hf`` used to pass validation and
    fail at run time)."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "answer": "1"}\n')
    assert sources.load_records(str(path), format="jsonl", kind="prompt").records
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({**GRPO, "data": {"sources": [{"name": "a", "path": str(path),
                                                         "format": "hf"}]}})
    assert info.value.errors[0][0] == "data.sources.0.format"
