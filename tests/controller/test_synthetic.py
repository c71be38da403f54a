"""Tier 0/1: the synthetic-data filters on hand-made completions and scores (no Ray), the
dataset files, and how a later stage finds the generated file through ``RunContext``."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewards.base import Score
from rlsys.config import load_recipe, recipe_from_dict
from rlsys.controller.context import RunContext
from rlsys.controller.synthetic import (
    accept_samples,
    best_worst_pair,
    build_decontaminator,
    cap_templates,
    filter_instructions,
    meta_prompt,
    output_path,
    parse_instruction,
    prepare_prompts,
    select_pairs,
    stats_path,
    write_jsonl_atomic,
)
from rlsys.data.decontam import Decontaminator, jaccard
from rlsys.data.sources import load_records

REPO = Path(__file__).resolve().parents[2]
EVAL_PROMPT = "Mia buys 4 boxes with 7 shells in each box and already had 3 shells in total"
RECORDS = [{"prompt": "Add 2 and 3.", "answer": "5"}, {"prompt": "Name a colour."}]


def ok(value: float) -> Score:
    return Score(value)


def failed() -> Score:
    return Score(None, error="checker crashed")


# --- rejection sampling -----------------------------------------------------------------------
def test_accept_samples_threshold_dedup_and_reasons() -> None:
    decon = Decontaminator([EVAL_PROMPT])
    samples = [
        (0, "It is 5.", ok(1.0)),
        (0, "it is 5", ok(1.0)),            # same normalised text -> duplicate
        (0, "It is 6.", ok(0.4)),           # below threshold
        (0, "   ", ok(1.0)),                # empty
        (1, "Red.", failed()),              # score error
        (1, "Red.", ok(1.0)),               # same text, other prompt -> kept
        (1, EVAL_PROMPT.upper(), ok(1.0)),  # eval leak
        (1, "Blue.", ok(0.5)),              # exactly at the threshold -> kept
    ]
    kept, dropped = accept_samples(RECORDS, samples, threshold=0.5, decontam=decon)
    assert kept == [{"prompt": "Add 2 and 3.", "response": "It is 5.", "answer": "5"},
                    {"prompt": "Name a colour.", "response": "Red."},
                    {"prompt": "Name a colour.", "response": "Blue."}]
    assert dropped == {"duplicate": 1, "below_threshold": 1, "empty": 1, "score_error": 1,
                       "contaminated": 1}
    # without a decontaminator the leak passes
    kept, dropped = accept_samples(RECORDS, samples, threshold=0.5)
    assert len(kept) == 4 and "contaminated" not in dropped


# --- preference pairs -----------------------------------------------------------------------
def test_best_worst_pair() -> None:
    assert best_worst_pair(["a", "b", "c", "d"], [0.3, 0.9, 0.1, 0.9], min_margin=0.0) == (1, 2)
    assert best_worst_pair(["a", "b"], [0.3, 0.5], min_margin=0.2) == (1, 0)  # margin 0.2
    assert best_worst_pair(["a", "b"], [0.3, 0.5], min_margin=0.3) is None
    assert best_worst_pair(["a", "b"], [1.0, 1.0], min_margin=0.0) is None  # margin 0
    assert best_worst_pair(["a"], [1.0], min_margin=0.0) is None
    with pytest.raises(ValueError, match="2 texts but 1 values"):
        best_worst_pair(["a", "b"], [1.0], min_margin=0.0)


def test_select_pairs() -> None:
    records = [*RECORDS, {"prompt": "ADD 2 and 3"}, {"prompt": "Count to 3."}]
    decon = Decontaminator([EVAL_PROMPT])
    samples = [
        (0, "Five.", ok(0.2)), (0, "5", ok(1.0)), (0, "Six.", ok(0.0)), (0, EVAL_PROMPT, ok(9.0)),
        (1, "Red.", ok(0.5)), (1, "Blue.", ok(0.5)),             # equal scores: no margin
        (2, "Five!", ok(1.0)), (2, "Four.", ok(0.0)),           # same prompt as 0: duplicate
        (3, "1 2 3", ok(1.0)), (3, "1 2", failed()), (3, "", ok(0.0)),  # one usable sample
    ]
    pairs, dropped = select_pairs(records, samples, min_margin=0.5, decontam=decon)
    # the leaked best sample (score 9) is not eligible: best = "5" (1.0), worst = "Six." (0.0)
    assert pairs == [{"prompt": "Add 2 and 3.", "chosen": "5", "rejected": "Six.", "margin": 1.0,
                      "chosen_score": 1.0, "rejected_score": 0.0}]
    assert dropped == {"contaminated": 1, "no_margin": 1, "duplicate": 1, "score_error": 1,
                       "empty": 1, "too_few_samples": 1}


def test_select_pairs_min_margin() -> None:
    samples = [(0, "a", ok(0.6)), (0, "b", ok(0.2)), (0, "c", ok(0.3))]
    pairs, _ = select_pairs(RECORDS, samples, min_margin=0.4)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "b")]
    assert pairs[0]["margin"] == pytest.approx(0.4)
    pairs, dropped = select_pairs(RECORDS, samples, min_margin=0.41)
    assert pairs == [] and dropped == {"no_margin": 1}


# --- self-instruct --------------------------------------------------------------------------
def test_meta_prompt_and_parsing() -> None:
    text = meta_prompt(["Add 2 and 3.", "  Name a colour. "])
    assert text.endswith("Task 1: Add 2 and 3.\nTask 2: Name a colour.\nTask 3:")
    assert text.startswith("Come up with a new task instruction")
    assert parse_instruction(" Sort the list.\nTask 5: x") == "Sort the list."
    assert parse_instruction("\n\nTask 3: Sort the list.") == "Sort the list."
    assert parse_instruction("Instruction: \"Sort it.\"") == "Sort it."
    assert parse_instruction("2) Sort it.") == "Sort it."
    assert parse_instruction("Tasks are fun.") == "Tasks are fun."
    assert parse_instruction(" \n  ") == ""


def test_jaccard_by_hand() -> None:
    # bigrams {a b, b c} vs {a b, b d}: 1 shared of 3
    assert jaccard("a b c", "A, b: d") == pytest.approx(1 / 3)
    assert jaccard("a b c", "a b c") == 1.0
    assert jaccard("a b", "c d") == 0.0
    assert jaccard("", "") == 0.0


def test_cap_templates() -> None:
    items = ["Write a poem about cats", "write a POEM on dogs", "Write a poem, please",
             "Write a story", "Sum two numbers", "List three birds", "Name a colour",
             "Explain rain"]
    # limit = max(1, floor(0.25 * 8)) = 2 per opening "write a poem"
    kept, dropped = cap_templates(items, 0.25)
    assert dropped == 1 and "Write a poem, please" not in kept and len(kept) == 7
    kept, dropped = cap_templates(items, 0.1)  # limit 1
    assert dropped == 2 and kept[0] == "Write a poem about cats"
    assert cap_templates([], 0.5) == ([], 0)


def test_filter_instructions_reasons() -> None:
    seeds = ["Add two numbers and explain each step.", "Name three birds that cannot fly."]
    decon = Decontaminator([EVAL_PROMPT])
    proposals = [
        "Task 3: Write a short poem about the sea.",            # kept
        "  ",                                                   # empty
        "Hi there",                                             # too_short (min 3)
        "word " * 30,                                           # too_long (max 20)
        "!! Describe the sun in one line.",                     # bad_format (punctuation)
        "Compute 3*4/2+1-7%2 = ?? 5555 55 5",                   # bad_format (not wordy)
        EVAL_PROMPT,                                            # contaminated
        "add two numbers, and explain each step",               # duplicate of a seed
        "Name three birds that cannot fly at all.",             # near duplicate: J = 5/7
        "Write a short poem about the sea!",                    # duplicate of a kept one
        "Write a short story about a dog.",                     # kept
        "Write a short note to a friend.",                      # template_cap (3rd opening)
        "Translate hello into French.",                         # kept
    ]
    kept, dropped = filter_instructions(proposals, seeds, min_words=3, max_words=20,
                                        max_similarity=0.6, max_template_share=0.5,
                                        decontam=decon)
    # 4 survive the per-item filters; limit = floor(0.5 * 4) = 2 per opening "write a short"
    assert kept == ["Write a short poem about the sea.", "Write a short story about a dog.",
                    "Translate hello into French."]
    assert dropped == {"empty": 1, "too_short": 1, "too_long": 1, "bad_format": 2,
                       "contaminated": 1, "duplicate": 2, "near_duplicate": 1, "template_cap": 1}


def test_prepare_prompts() -> None:
    records = [{"prompt": "A b c."}, {"prompt": "a, B c"}, {"prompt": EVAL_PROMPT},
               {"prompt": [{"role": "user", "content": "Tell a joke."}]}, {"prompt": "Last one"}]
    decon = Decontaminator([EVAL_PROMPT])
    clean, dropped = prepare_prompts(records, limit=3, decontam=decon)
    # distinct: "A b c.", EVAL, joke, last -> first 3 -> minus the leak
    assert clean == [records[0], records[3]]
    assert dropped == {"duplicate_prompt": 1, "contaminated_prompt": 1}
    clean, dropped = prepare_prompts(records, limit=None, decontam=None)
    assert len(clean) == 4 and dropped == {"duplicate_prompt": 1}


# --- files and run-dir wiring ---------------------------------------------------------------
def test_jsonl_written_atomically_and_loadable(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "rs.jsonl"
    rows = [{"prompt": "p", "response": "r é\u2028x", "answer": "1"}, {"prompt": "q",
                                                                       "response": "s"}]
    write_jsonl_atomic(out, rows)
    assert sorted(p.name for p in out.parent.iterdir()) == ["rs.jsonl"]  # no temp file left
    assert load_records(str(out), kind="sft").records == rows
    assert stats_path(out) == tmp_path / "deep" / "rs.stats.json"


def _recipe(tmp_path: Path, **extra):
    data = {
        "name": "syn", "stages": [{"name": "rs", "kind": "rejection_sampling",
                                   "generate": {"output": "data/rs.jsonl", **extra}},
                                  {"name": "sft", "kind": "sft", "sources": ["rs_data"]}],
        "data": {"sources": [
            {"name": "rs_data", "path": "{run_dir}/data/rs.jsonl", "kind": "sft"},
            {"name": "heldout", "generator": "arithmetic",
             "generator_kwargs": {"num": 3, "split": "eval"}, "kind": "prompt",
             "split": "eval"}]},
    }
    return recipe_from_dict(data)


def test_generated_file_reaches_the_next_stage(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)  # validates although data/rs.jsonl does not exist yet
    ctx = RunContext(recipe, tmp_path, start_ray=False)
    out = output_path(ctx, recipe.stages[0].generate.output)
    assert out == tmp_path / "data" / "rs.jsonl"
    assert output_path(ctx, "{run_dir}/x.jsonl") == tmp_path / "x.jsonl"
    assert output_path(ctx, "/abs/y.jsonl") == Path("/abs/y.jsonl")
    write_jsonl_atomic(out, [{"prompt": "p", "response": "r", "answer": "1"}])
    assert ctx.records("rs_data") == [{"prompt": "p", "response": "r", "answer": "1"}]


def test_decontaminator_built_from_eval_sources(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, decontam_n=6)
    ctx = RunContext(recipe, tmp_path, start_ray=False)
    decon = build_decontaminator(ctx, recipe.stages[0].generate)
    assert decon.n == 6 and decon.num_eval_texts == 3
    assert decon.is_contaminated(ctx.records("heldout")[0]["prompt"].lower())
    assert build_decontaminator(ctx, recipe.stages[0].generate.model_copy(
        update={"decontaminate": False})) is None


def test_shipped_recipes_validate_before_their_data_exists() -> None:
    for name, kinds in (("rs_sft_eval_tiny", ["rejection_sampling", "sft", "eval"]),
                        ("pairs_dpo_eval_tiny", ["preference_pairs", "dpo", "eval"])):
        recipe = load_recipe(REPO / "configs" / f"{name}.yaml")
        assert [s.kind for s in recipe.stages] == kinds
        produced = recipe.stages[0].generate.output
        consumer = recipe.data.sources[[s.name for s in recipe.data.sources].index(
            recipe.stages[1].sources[0])]
        assert consumer.path == produced  # the next stage reads what the first one writes


def test_generate_config_checks() -> None:
    with pytest.raises(ValueError, match="min_words must be <= max_words"):
        _recipe(Path("."), min_words=9, max_words=3)
    with pytest.raises(ValueError, match="decontam_n"):
        _recipe(Path("."), decontam_n=0)


def test_stats_path_never_collides_with_the_dataset(tmp_path: Path) -> None:
    for name in ("rs.jsonl", "rs.json", "rs", "rs.stats.json"):
        assert stats_path(tmp_path / name) != tmp_path / name
