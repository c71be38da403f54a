"""Synthetic-data stages: ``rejection_sampling``, ``preference_pairs`` and ``self_instruct``.

Each samples from the current model with the rollout pool, filters, and writes a JSONL dataset
to ``generate.output`` (relative to the run dir, or ``{run_dir}/...``) atomically, plus
``<stem>.stats.json`` beside it (generated, kept, dropped per reason, decontaminated). A later
stage consumes it through a data source with ``path: "{run_dir}/<output>"``; sources load
lazily, so the file only has to exist when that stage starts. The model is passed on unchanged.

* ``rejection_sampling`` (RFT): k samples per prompt, scored by the recipe's reward; samples with
  reward >= ``threshold`` are kept, deduplicated on normalised (prompt, response) text, and
  written as SFT records ``{prompt, response, answer}``. With a recipe ``env:``, k episodes per
  prompt instead, kept as whole conversations (``rlsys.controller.episode_data``).
* ``preference_pairs`` (UltraFeedback-style): k samples per prompt, scored by the recipe's
  reward (a verifier, a reward model, an LLM judge behind the ``remote`` reward) or, with
  ``generate.judge``, ranked by an LLM judge in its own worker pool (``actors.judge_pool``;
  pointwise scores in [0, 1] or a pairwise round robin in [-1, 1]; unparsable judge answers are
  ``score_error`` drops and the judge's counters go to the stats file); the best and worst sample
  form ``{prompt, chosen, rejected, margin, chosen_score, rejected_score}`` when
  ``margin >= min_margin`` and ``margin > 0``.
* ``self_instruct`` (Wang et al. 2023): meta-prompts showing ``fewshot`` seed instructions (the
  stage's sources) ask the model for a new instruction; proposals are parsed, filtered (length,
  format, exact and word-bigram-Jaccard near duplicates against the seeds and each other, a cap
  on the share of any first-three-words template), then answered once each -> ``{prompt,
  response}``. Answers are not scored: new instructions have no reference.

All three drop prompts and outputs that share a word n-gram with the recipe's eval prompts
(``rlsys.data.decontam``). The filters are pure functions; only the ``run_*`` drivers touch the
worker pools. This module does not train anything.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlsys.controller.generation import generate_in_chunks, reward_items
from rlsys.data.decontam import Decontaminator, jaccard, normalize_text, normalize_words, text_of

if TYPE_CHECKING:
    from rewards.base import Score
    from rlsys.config import StageConfig
    from rlsys.config.schema import GenerateConfig
    from rlsys.controller.context import RunContext
    from rlsys.types import Completion

#: what a driver returns: kept records, samples generated, drops per reason, extra stats
DriverResult = tuple[list[dict], int, Counter, dict[str, Any]]

#: prompts handed to the rollout pool per call (bounds memory on large prompt sets)
GENERATE_CHUNK = 64
#: float slack when comparing a reward margin with ``min_margin``
MARGIN_TOL = 1e-9
#: word n-gram length of the self-instruct near-duplicate test
SIMILARITY_N = 2
#: words that make up a self-instruct "template" (the instruction's opening)
TEMPLATE_WORDS = 3

META_PROMPT_HEADER = ("Come up with a new task instruction that is different from the examples "
                      "below. Write only the instruction, on one line.\n\n")


# --- pure filters ---------------------------------------------------------------------------
def accept_samples(records: Sequence[dict], samples: Sequence[tuple[int, str, Any]], *,
                   threshold: float, decontam: Decontaminator | None = None,
                   ) -> tuple[list[dict], Counter]:
    """Rejection sampling: keep samples scoring >= ``threshold``, one per distinct text.

    Args:
        records: the prompt records (``prompt``, optional ``answer``).
        samples: ``(prompt_index, response_text, score)``; ``score`` has ``.ok`` and ``.value``.
        threshold: minimum reward to keep a sample.
        decontam: drops responses that overlap the eval set.
    Returns:
        SFT records ``{prompt, response[, answer]}`` and the dropped count per reason
        (``score_error``, ``empty``, ``contaminated``, ``below_threshold``, ``duplicate``).
    """
    kept: list[dict] = []
    dropped: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    for index, text, score in samples:
        rec = records[index]
        key = (normalize_text(text_of(rec["prompt"])), normalize_text(text))
        if not score.ok:
            dropped["score_error"] += 1
        elif not key[1]:
            dropped["empty"] += 1
        elif decontam is not None and decontam.is_contaminated(text):
            dropped["contaminated"] += 1
        elif score.value < threshold:
            dropped["below_threshold"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            out = {"prompt": rec["prompt"], "response": text}
            if "answer" in rec:
                out["answer"] = rec["answer"]
            kept.append(out)
    return kept, dropped


def best_worst_pair(texts: Sequence[str], values: Sequence[float], *,
                    min_margin: float) -> tuple[int, int] | None:
    """Indices ``(chosen, rejected)`` of the best and worst sample (first one on ties), or None
    when the margin is not positive or below ``min_margin``.

    >>> best_worst_pair(["a", "b", "c"], [0.2, 0.9, 0.1], min_margin=0.5)
    (1, 2)
    >>> best_worst_pair(["a", "b"], [0.5, 0.5], min_margin=0.0) is None
    True
    """
    if len(texts) != len(values):
        raise ValueError(f"best_worst_pair: {len(texts)} texts but {len(values)} values")
    if len(values) < 2:
        return None
    best = max(range(len(values)), key=lambda i: values[i])
    worst = min(range(len(values)), key=lambda i: values[i])
    margin = values[best] - values[worst]
    # the tolerance keeps e.g. 0.6 - 0.2 (= 0.3999...) at min_margin 0.4
    if margin <= 0 or margin < min_margin - MARGIN_TOL:
        return None
    return best, worst


def select_pairs(records: Sequence[dict], samples: Sequence[tuple[int, str, Any]], *,
                 min_margin: float, decontam: Decontaminator | None = None,
                 ) -> tuple[list[dict], Counter]:
    """Preference pairs: best vs worst scored sample per prompt (see ``best_worst_pair``).

    Samples are dropped for ``score_error``, ``empty`` or ``contaminated``; a prompt yields no
    pair for ``too_few_samples`` (< 2 usable), ``no_margin`` or ``duplicate`` (a repeated prompt).
    """
    groups: dict[int, list[tuple[str, float]]] = {}
    dropped: Counter = Counter()
    for index, text, score in samples:
        group = groups.setdefault(index, [])
        if not score.ok:
            dropped["score_error"] += 1
        elif not normalize_text(text):
            dropped["empty"] += 1
        elif decontam is not None and decontam.is_contaminated(text):
            dropped["contaminated"] += 1
        else:
            group.append((text, float(score.value)))
    pairs: list[dict] = []
    seen: set[str] = set()
    for index, group in groups.items():
        prompt = records[index]["prompt"]
        picked = best_worst_pair([t for t, _ in group], [v for _, v in group],
                                 min_margin=min_margin) if len(group) >= 2 else None
        key = normalize_text(text_of(prompt))
        if len(group) < 2:
            dropped["too_few_samples"] += 1
        elif picked is None:
            dropped["no_margin"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            (chosen, c_val), (rejected, r_val) = group[picked[0]], group[picked[1]]
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                          "margin": c_val - r_val, "chosen_score": c_val,
                          "rejected_score": r_val})
    return pairs, dropped


def meta_prompt(seeds: Sequence[str]) -> str:
    """The self-instruct meta-prompt: a header, the seed instructions as numbered tasks, and an
    open ``Task N:`` line for the model to complete.

    >>> print(meta_prompt(["Add 2 and 3.", "Name a colour."]).splitlines()[-1])
    Task 3:
    """
    shots = "".join(f"Task {i}: {s.strip()}\n" for i, s in enumerate(seeds, start=1))
    return f"{META_PROMPT_HEADER}{shots}Task {len(seeds) + 1}:"


_TASK_PREFIX = re.compile(r"^\s*(?:(?:task|instruction)\s*\d*\s*[:.)-]|\d+\s*[:.)-])\s*", re.I)


def parse_instruction(text: str) -> str:
    """The proposed instruction in a completion: its first non-empty line, without a
    ``Task N:`` / ``Instruction:`` / ``3.`` prefix or surrounding quotes.

    >>> parse_instruction("\\n Task 4: Sort the list.\\nTask 5: more")
    'Sort the list.'
    """
    for line in text.splitlines():
        line = _TASK_PREFIX.sub("", line.strip()).strip().strip("\"'").strip()
        if line:
            return line
    return ""


def _format_problem(instruction: str) -> bool:
    """Self-Instruct's heuristics: must start with a letter/digit and be mostly words."""
    if not instruction[0].isalnum():
        return True
    wordy = sum(ch.isalpha() or ch.isspace() for ch in instruction)
    return wordy < 0.5 * len(instruction)


def cap_templates(instructions: Sequence[str], max_share: float,
                  words: int = TEMPLATE_WORDS) -> tuple[list[str], int]:
    """Keep instructions in order while no opening (first ``words`` normalised words) exceeds
    ``max(1, floor(max_share * len(instructions)))`` of them; returns (kept, dropped count).

    >>> cap_templates(["write a poem", "Write a poem, now", "sum 1 and 2", "list birds"], 0.25)
    (['write a poem', 'sum 1 and 2', 'list birds'], 1)
    """
    limit = max(1, int(max_share * len(instructions)))
    counts: Counter = Counter()
    kept = []
    for text in instructions:
        opening = tuple(normalize_words(text)[:words])
        if counts[opening] < limit:
            counts[opening] += 1
            kept.append(text)
    return kept, len(instructions) - len(kept)


def filter_instructions(proposals: Sequence[str], seeds: Sequence[str], *, min_words: int,
                        max_words: int, max_similarity: float, max_template_share: float,
                        decontam: Decontaminator | None = None) -> tuple[list[str], Counter]:
    """Self-instruct filtering of raw completions into new instructions (see module docstring).

    Reasons: ``empty``, ``too_short``, ``too_long``, ``bad_format``, ``contaminated``,
    ``duplicate`` (same normalised text as a seed or an earlier one), ``near_duplicate``
    (Jaccard > ``max_similarity``), ``template_cap``.
    """
    dropped: Counter = Counter()
    seen = {normalize_text(s) for s in seeds}
    kept: list[str] = []
    for raw in proposals:
        instruction = parse_instruction(raw)
        n_words = len(normalize_words(instruction))
        if n_words == 0:
            reason = "empty"
        elif n_words < min_words:
            reason = "too_short"
        elif n_words > max_words:
            reason = "too_long"
        elif _format_problem(instruction):
            reason = "bad_format"
        elif decontam is not None and decontam.is_contaminated(instruction):
            reason = "contaminated"
        elif normalize_text(instruction) in seen:
            reason = "duplicate"
        elif any(jaccard(instruction, other, n=SIMILARITY_N) > max_similarity
                 for other in (*seeds, *kept)):
            reason = "near_duplicate"
        else:
            seen.add(normalize_text(instruction))
            kept.append(instruction)
            continue
        dropped[reason] += 1
    kept, capped = cap_templates(kept, max_template_share)
    if capped:
        dropped["template_cap"] += capped
    return kept, dropped


def prepare_prompts(records: Sequence[dict], *, limit: int | None,
                    decontam: Decontaminator | None) -> tuple[list[dict], Counter]:
    """Distinct prompt records (normalised text), the first ``limit`` of them, minus those that
    overlap the eval set; returns them and the counts ``duplicate_prompt``/``contaminated_prompt``.
    """
    seen: set[str] = set()
    distinct: list[dict] = []
    dropped: Counter = Counter()
    for rec in records:
        key = normalize_text(text_of(rec["prompt"]))
        if key in seen:
            dropped["duplicate_prompt"] += 1
            continue
        seen.add(key)
        distinct.append(rec)
    distinct = distinct[:limit] if limit else distinct
    clean = [r for r in distinct
             if decontam is None or not decontam.is_contaminated(text_of(r["prompt"]))]
    if len(clean) < len(distinct):
        dropped["contaminated_prompt"] = len(distinct) - len(clean)
    return clean, dropped


# --- files ----------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, records: Sequence[dict]) -> None:
    """Write ``records`` as JSONL via a temporary file and a rename (never a partial file)."""
    _write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def stats_path(output: Path) -> Path:
    """``data/rs.jsonl`` -> ``data/rs.stats.json``."""
    return output.with_name(f"{output.stem}.stats.json")


# --- drivers --------------------------------------------------------------------------------
def output_path(ctx: RunContext, output: str) -> Path:
    """``generate.output`` resolved: ``{run_dir}`` expanded, relative paths under the run dir."""
    path = Path(ctx.resolve_path(output))
    return path if path.is_absolute() else Path(ctx.run_dir) / path


def build_decontaminator(ctx: RunContext, gen: GenerateConfig) -> Decontaminator | None:
    """A ``Decontaminator`` over every eval prompt of the recipe; None when off or no eval set."""
    if not gen.decontaminate:
        return None
    try:
        names = ctx.eval_sources()
    except ValueError:
        return None
    texts = [text_of(r["prompt"]) for name in names for r in ctx.records(name) if "prompt" in r]
    return Decontaminator(texts, n=gen.decontam_n) if texts else None


def _generate(ctx: RunContext, model_path: str, prompts: Sequence[Any], *, n: int,
              gen: GenerateConfig) -> list[Completion]:
    """``n`` samples per prompt, in prompt order, ``GENERATE_CHUNK`` prompts per call."""
    return generate_in_chunks(ctx.rollout_pool(model_path), prompts, chunk=GENERATE_CHUNK, n=n,
                              seed=ctx.recipe.seed, temperature=gen.temperature, top_p=1.0,
                              max_new_tokens=gen.max_new_tokens)


def _texts(completions: Sequence[Completion]) -> list[tuple[int, str]]:
    """``(prompt_index, text)`` of each completion."""
    return [(c.prompt_index, c.text) for c in completions]


def _scored(ctx: RunContext, model_path: str, records: list[dict],
            gen: GenerateConfig) -> list[tuple[int, str, Score]]:
    completions = _generate(ctx, model_path, [r["prompt"] for r in records], n=gen.k, gen=gen)
    scores = ctx.reward_pool().score(reward_items(records, completions)) if completions else []
    return [(c.prompt_index, c.text, s) for c, s in zip(completions, scores, strict=True)]


def _section(stage: StageConfig) -> GenerateConfig:
    """The stage's ``generate`` section (the schema requires one for these kinds)."""
    if stage.generate is None:
        raise ValueError(f"stage {stage.name!r} ({stage.kind}) has no 'generate' section")
    return stage.generate


def _stage_prompts(ctx: RunContext, stage: StageConfig, decontam: Decontaminator | None
                   ) -> tuple[list[dict], Counter]:
    names = ctx.stage_sources(stage.sources, ("prompt", "sft"))
    records = []
    for name in names:
        rows = ctx.records(name)
        if any("prompt" not in r for r in rows):
            raise ValueError(f"stage {stage.name!r}: source {name!r} has records without a "
                             f"'prompt' (a {stage.kind} stage needs prompt or sft sources)")
        records += rows
    return prepare_prompts(records, limit=_section(stage).num_prompts, decontam=decontam)


def _rejection_sampling(ctx: RunContext, stage: StageConfig, model_path: str,
                        decontam: Decontaminator | None) -> DriverResult:
    records, dropped = _stage_prompts(ctx, stage, decontam)
    if ctx.recipe.env is not None:  # episodes in the environment -> SFT conversations
        from rlsys.controller.episode_data import episode_rejection_sampling

        kept, generated, more = episode_rejection_sampling(ctx, model_path, records,
                                                           _section(stage), decontam,
                                                           chunk=GENERATE_CHUNK)
        return kept, generated, dropped + more, {}
    samples = _scored(ctx, model_path, records, _section(stage))
    kept, more = accept_samples(records, samples, threshold=_section(stage).threshold,
                                decontam=decontam)
    return kept, len(samples), dropped + more, {}


def _preference_pairs(ctx: RunContext, stage: StageConfig, model_path: str,
                      decontam: Decontaminator | None) -> DriverResult:
    records, dropped = _stage_prompts(ctx, stage, decontam)
    gen = _section(stage)
    if gen.judge is None:
        samples, extra = _scored(ctx, model_path, records, gen), {}
    else:
        from rlsys.controller.judging import judge_samples

        texts = _generate(ctx, model_path, [r["prompt"] for r in records], n=gen.k, gen=gen)
        samples, extra = judge_samples(records, _texts(texts), gen.judge)
    pairs, more = select_pairs(records, samples, min_margin=gen.min_margin, decontam=decontam)
    return pairs, len(samples), dropped + more, extra


def _self_instruct(ctx: RunContext, stage: StageConfig, model_path: str,
                   decontam: Decontaminator | None) -> DriverResult:
    gen = _section(stage)
    seed_records, dropped = _stage_prompts(ctx, stage, None)
    seeds = [text_of(r["prompt"]) for r in seed_records]
    rng = random.Random(f"self_instruct:{ctx.recipe.seed}")
    metas = [meta_prompt(rng.sample(seeds, min(gen.fewshot, len(seeds))))
             for _ in range(gen.num_prompts or len(seeds))]
    proposals = [c.text for c in _generate(ctx, model_path, metas, n=gen.k, gen=gen)]
    instructions, more = filter_instructions(
        proposals, seeds, min_words=gen.min_words, max_words=gen.max_words,
        max_similarity=gen.max_similarity, max_template_share=gen.max_template_share,
        decontam=decontam)
    dropped += more
    answers = _generate(ctx, model_path, instructions, n=1, gen=gen) if instructions else []
    kept = []
    for index, text in _texts(answers):
        if not normalize_text(text):
            dropped["empty_response"] += 1
        elif decontam is not None and decontam.is_contaminated(text):
            dropped["contaminated"] += 1
        else:
            kept.append({"prompt": instructions[index], "response": text})
    return kept, len(proposals), dropped, {}


_DRIVERS = {"rejection_sampling": _rejection_sampling, "preference_pairs": _preference_pairs,
            "self_instruct": _self_instruct}


def run_synthetic_stage(ctx: RunContext, stage: StageConfig, model_path: str) -> dict[str, Any]:
    """Run a data-generation stage; writes the dataset and its stats, passes the model on.

    Returns ``{"checkpoint": model_path, "output", "stats", "generated", "kept",
    "decontaminated"}``. Raises ``ValueError`` (after writing the stats) when nothing was kept,
    since the stage that reads the dataset could not run.
    """
    gen = _section(stage)
    out = output_path(ctx, gen.output)
    decontam = build_decontaminator(ctx, gen)
    kept, generated, dropped, extra = _DRIVERS[stage.kind](ctx, stage, model_path, decontam)
    decontaminated = dropped["contaminated"] + dropped["contaminated_prompt"]
    stats = {"stage": stage.name, "kind": stage.kind, "model": model_path, "generated": generated,
             "kept": len(kept), "dropped": dict(sorted(dropped.items())),
             "decontaminated": decontaminated,
             "decontamination": (f"{decontam.n}-gram vs {decontam.num_eval_texts} eval prompts"
                                 if decontam else "off"), **extra}
    _write_atomic(stats_path(out), json.dumps(stats, indent=2))
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) or "none"
    print(f"[{stage.name}] {stage.kind}: {generated} generated, {len(kept)} kept "
          f"(dropped: {reasons}; decontaminated {decontaminated}) -> {out}", flush=True)
    if "judge" in extra:
        print(f"[{stage.name}] judge: {extra['judge']}", flush=True)
    if not kept:
        raise ValueError(f"stage {stage.name!r} kept no examples (dropped: {reasons}); "
                         f"see {stats_path(out)}")
    write_jsonl_atomic(out, kept)
    return {"checkpoint": model_path, "output": str(out), "stats": str(stats_path(out)),
            "generated": generated, "kept": len(kept), "decontaminated": decontaminated}
