"""Recipe validation of the ``rm`` and ``merge`` stages: errors name the field."""

from __future__ import annotations

import pytest

from rlsys.config import RecipeError, recipe_from_dict

PAIRS = {"name": "prefs", "generator": "arithmetic_pairs", "kind": "pair"}


def _recipe(*stages, sources=(PAIRS,)) -> dict:
    return {"name": "t", "data": {"sources": list(sources)}, "stages": list(stages)}


def _error(data: dict) -> str:
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(data)
    return str(err.value)


def test_valid_rm_and_merge_stages():
    recipe = recipe_from_dict(_recipe(
        {"name": "rm", "kind": "rm", "batch_size": 4, "rm": {"margin": 0.5}},
        {"name": "m", "kind": "merge", "merge": {"method": "ties", "base": "base",
                                                  "density": 0.5,
                                                  "models": [{"path": "input"}]}}))
    assert recipe.stages[0].rm.margin == 0.5
    assert recipe.stages[1].merge.density == 0.5


@pytest.mark.parametrize("stage, field", [
    ({"name": "m", "kind": "merge"}, "stages.0"),
    ({"name": "m", "kind": "merge", "merge": {"method": "slerp", "models": [{"path": "a"}]}},
     "slerp merges exactly 2 models"),
    ({"name": "m", "kind": "merge", "merge": {"method": "ties", "models": [{"path": "a"}]}},
     "ties needs base"),
    ({"name": "m", "kind": "merge", "merge": {"method": "linear", "base": "base",
                                              "models": [{"path": "a"}]}}, "takes no base"),
    ({"name": "m", "kind": "merge", "merge": {"method": "avg", "models": [{"path": "a"}]}},
     "stages.0.merge.method"),
    ({"name": "m", "kind": "merge", "merge": {"method": "linear",
                                              "models": [{"path": "stage:later"}]}},
     "stages.0.merge.models.0.path: 'stage:later' must name an earlier stage"),
    ({"name": "r", "kind": "rm", "rm": {"eval_sources": ["nope"]}},
     "stages.0.rm.eval_sources: unknown source(s) ['nope']"),
    ({"name": "r", "kind": "rm", "rm": {"margin": -1}}, "stages.0.rm.margin"),
    ({"name": "s", "kind": "sft", "rm": {}}, "'rm' options are only for kind 'rm'"),
])
def test_bad_rm_and_merge_sections_name_the_field(stage, field):
    assert field in _error(_recipe(stage))
