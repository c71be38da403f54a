"""Supervised stage data: a stage's curriculum (recipe phases -> the sampler, step bounds
exact, token bounds ended by the stage after the step that spends the budget, the resumable
position mid-phase) and DPO sources without identical pairs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlsys.config import recipe_from_dict
from rlsys.controller.supervised import _sampler, _StageRun

SOURCES = [{"name": n, "generator": "arithmetic_text", "kind": "text"}
           for n in ("general", "domain", "qa")]
ENCODED = {"general": list(range(11)), "domain": list(range(7)), "qa": list(range(5))}


def _stage(curriculum, steps=6, batch_size=4):
    recipe = recipe_from_dict({"name": "c", "data": {"sources": SOURCES}, "stages": [
        {"name": "cpt", "kind": "cpt", "steps": steps, "batch_size": batch_size,
         "curriculum": curriculum}]})
    return recipe, recipe.stages[0]


def _ctx(recipe):
    return SimpleNamespace(recipe=recipe, source=lambda n: next(
        s for s in recipe.data.sources if s.name == n))


def test_step_phases_switch_after_the_named_step():
    recipe, stage = _stage([{"until_step": 2, "weights": {"general": 1.0}},
                            {"weights": {"qa": 1.0}}])
    sampler = _sampler(_ctx(recipe), stage, ENCODED)
    first = [next(sampler) for _ in range(2 * stage.batch_size)]  # steps 1-2
    assert {name for name, _ in first} == {"general"}
    assert sampler.phase == 1
    assert {next(sampler)[0] for _ in range(8)} == {"qa"}


def test_token_phase_ends_after_the_step_that_spends_the_budget(capsys):
    recipe, stage = _stage([{"until_tokens": 100, "weights": {"general": 1.0}},
                            {"weights": {"domain": 1.0}}])
    run = _StageRun.__new__(_StageRun)  # the bookkeeping only: no learners, no Ray
    run.stage, run.tokens = stage, 0
    run.sampler = _sampler(_ctx(recipe), stage, ENCODED)
    for step, tokens in enumerate((60, 30), start=1):
        phase = run.sampler.phase
        [next(run.sampler) for _ in range(stage.batch_size)]
        run.count_tokens(step, tokens, phase)
        assert run.sampler.phase == 0
    [next(run.sampler) for _ in range(stage.batch_size)]
    run.count_tokens(3, 20, 0)  # 110 >= 100: the next step draws from phase 1
    assert run.sampler.phase == 1 and run.tokens == 110
    assert "curriculum phase 2/2 from step 4 (110 tokens trained)" in capsys.readouterr().out
    state = run.sampler.state_dict()
    resumed = _sampler(_ctx(recipe), stage, ENCODED)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(6)] == [next(run.sampler) for _ in range(6)]
    assert {name for name, _ in (next(resumed) for _ in range(6))} == {"domain"}


@pytest.mark.parametrize("curriculum, message", [
    ([{"until_step": 2, "weights": {"general": 1.0}}], "last phase runs to the end"),
    ([{"until_step": 6, "weights": {"general": 1.0}}, {"weights": {"qa": 1.0}}],
     "must be < the stage's steps"),
    ([{"until_step": 3, "weights": {"general": 1.0}}, {"until_step": 2, "weights": {"qa": 1}},
      {"weights": {"qa": 1.0}}], "must increase"),
    ([{"until_step": 2, "until_tokens": 9, "weights": {"general": 1.0}},
      {"weights": {"qa": 1.0}}], "not both"),
    ([{"until_step": 2, "weights": {"nope": 1.0}}, {"weights": {"qa": 1.0}}],
     r"curriculum.0.weights: unknown source\(s\) \['nope'\]"),
])
def test_bad_curricula_are_named(curriculum, message):
    with pytest.raises(ValueError, match=message):
        _stage(curriculum)


def test_dpo_sources_skip_and_count_identical_pairs(capsys, tiny_model_dir):
    from rlsys.controller.supervised import encode_sources
    from rlsys.data.sources import DataError
    from rlsys.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    recipe = recipe_from_dict({"name": "d", "data": {"sources": [
        {"name": "prefs", "generator": "arithmetic_pairs", "kind": "pair"}]},
        "stages": [{"name": "dpo", "kind": "dpo"}]})
    rows = [{"prompt": "1+1?", "chosen": "2", "rejected": "3"},
            {"prompt": "2+2?", "chosen": "4", "rejected": "4"}]
    ctx = SimpleNamespace(recipe=recipe, source=lambda n: recipe.data.sources[0],
                          records=lambda n: rows)
    out = encode_sources(ctx, ["prefs"], "dpo", tokenizer)
    assert len(out["prefs"]) == 1
    assert "prefs: skipped 1 pair(s) whose chosen equals rejected" in capsys.readouterr().out
    rows[:] = rows[1:]
    with pytest.raises(DataError, match="every pair has chosen == rejected"):
        encode_sources(ctx, ["prefs"], "dpo", tokenizer)
