"""Evaluation: sample k responses per held-out prompt with the rollout workers, score them with
the recipe's reward, and report pass@1, pass@k (unbiased estimator), maj@k, mean response length
and truncation rate per data source, as a JSON report and a table.

Used three ways: ``rlsys eval RECIPE --checkpoint DIR``, an ``eval`` stage, and the
``eval_before``/``eval_after`` hooks of training stages. The estimators are pure functions.
"""

from __future__ import annotations

import json
from collections import Counter
from math import comb
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlsys.controller.generation import generate_in_chunks, reward_items

if TYPE_CHECKING:
    from rewards.base import Score
    from rlsys.config import Recipe, StageConfig
    from rlsys.controller.context import RunContext
    from rlsys.controller.generation import RolloutPoolLike


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, eq. 1): 1 - C(n-c, k) / C(n, k).

    >>> round(pass_at_k(5, 1, 1), 6), pass_at_k(5, 0, 3), pass_at_k(4, 2, 3)
    (0.2, 0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_correct(answers: list[str | None], correct: list[bool]) -> bool:
    """maj@k for one prompt: the most common extracted answer (ties: first seen) is correct.

    >>> majority_correct(["4", "5", "4"], [True, False, True])
    True
    >>> majority_correct([None, None, "4"], [False, False, True])
    True
    """
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return any(ok for a, ok in zip(answers, correct, strict=True) if a == winner)


def _answer_of(score: Score, text: str) -> str | None:
    info = getattr(score, "info", {}) or {}
    if "extracted" in info:
        return None if info["extracted"] is None else str(info["extracted"]).strip()
    return text.strip() or None


def summarize(samples: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Aggregate per-sample rows ``{prompt_id, correct, answer, length, truncated}``."""
    by_prompt: dict[Any, list[dict[str, Any]]] = {}
    for s in samples:
        by_prompt.setdefault(s["prompt_id"], []).append(s)
    n_prompts = len(by_prompt)
    p1 = sum(pass_at_k(len(v), sum(s["correct"] for s in v), 1) for v in by_prompt.values())
    pk = sum(pass_at_k(len(v), sum(s["correct"] for s in v), min(k, len(v)))
             for v in by_prompt.values())
    maj = sum(majority_correct([s["answer"] for s in v], [s["correct"] for s in v])
              for v in by_prompt.values())
    correct = sum(s["correct"] for s in samples)
    return {
        "prompts": n_prompts, "samples": len(samples), "k": k,
        "pass@1": p1 / max(n_prompts, 1), f"pass@{k}": pk / max(n_prompts, 1),
        f"maj@{k}": maj / max(n_prompts, 1),
        "mean_length": sum(s["length"] for s in samples) / max(len(samples), 1),
        "truncation_rate": sum(s["truncated"] for s in samples) / max(len(samples), 1),
        "correct": correct, "total": len(samples), "accuracy": correct / max(len(samples), 1),
    }


def evaluate(ctx: RunContext, model_path: str, *, sources: list[str], k: int, temperature: float,
             max_new_tokens: int, num_prompts: int | None, seed: int = 0) -> dict[str, Any]:
    """Sample, score and summarise per source (and overall) for the model at ``model_path``."""
    rollout = ctx.rollout_pool(model_path)
    if ctx.recipe.env is not None:
        return _evaluate_episodes(ctx, rollout, model_path, sources=sources, k=k,
                                  temperature=temperature, num_prompts=num_prompts, seed=seed)
    reward = ctx.reward_pool()
    report: dict[str, Any] = {"model": model_path, "sources": {}}
    all_samples: list[dict[str, Any]] = []
    for name in sources:
        records = ctx.records(name)[:num_prompts] if num_prompts else ctx.records(name)
        completions = generate_in_chunks(
            rollout, [r["prompt"] for r in records], chunk=eval_chunk(rollout, k), n=k,
            seed=seed, progress=f"eval {name}" if ctx.recipe.logging.progress else None,
            temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
        scores = reward.score(reward_items(records, completions))
        samples = [{"prompt_id": (name, c.prompt_index), "correct": s.correct,
                    "answer": _answer_of(s, c.text), "length": len(c.response_ids),
                    "truncated": c.finish_reason == "length"}
                   for c, s in zip(completions, scores, strict=True)]
        report["sources"][name] = summarize(samples, k)
        all_samples += samples
    report["overall"] = summarize(all_samples, k)
    return report


def _evaluate_episodes(ctx: RunContext, rollout: RolloutPoolLike, model_path: str, *,
                       sources: list[str], k: int, temperature: float,
                       num_prompts: int | None, seed: int) -> dict[str, Any]:
    """``evaluate`` with the recipe's ``env``: k episodes per record, graded by the
    environment; maj@k votes on the final answers it extracted; lengths count generated
    tokens; ``truncated`` means cut by the turn or token caps. Each source's trajectories go
    to ``RUN_DIR/eval_samples/LABEL-SOURCE.jsonl``."""
    from rlsys.controller.trajectories import episode_score, trajectory_metrics, trajectory_row

    env = ctx.recipe.env
    assert env is not None
    report: dict[str, Any] = {"model": model_path, "sources": {}, "env": env.type}
    all_samples: list[dict[str, Any]] = []
    out_dir = ctx.run_dir / "eval_samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    label = Path(model_path).parent.name if Path(model_path).name == "final" else \
        Path(model_path).name
    for name in sources:
        records = ctx.records(name)[:num_prompts] if num_prompts else ctx.records(name)
        completions = generate_in_chunks(
            rollout, records, chunk=eval_chunk(rollout, k), n=k, seed=seed,
            progress=f"eval {name}" if ctx.recipe.logging.progress else None,
            temperature=temperature, top_p=1.0, env=env.model_dump())
        samples = []
        with (out_dir / f"{label}-{name}.jsonl").open("w") as f:
            for c in completions:
                tr, score = c.trajectory or {}, episode_score(c)
                samples.append({"prompt_id": (name, c.prompt_index), "correct": score.correct,
                                "answer": tr.get("pred"), "length": sum(c.loss_mask or []),
                                "truncated": bool(tr.get("truncated"))})
                f.write(json.dumps(trajectory_row(c, records[c.prompt_index])) + "\n")
        report["sources"][name] = {**summarize(samples, k), **trajectory_metrics(completions)}
        all_samples += samples
    report["overall"] = summarize(all_samples, k)
    return report


#: Sequences (prompts x k) per rollout worker per generate call while evaluating: small enough
#: for a visible progress bar, large enough to keep batched generation efficient.
EVAL_CHUNK_SEQUENCES = 32


def eval_chunk(rollout: RolloutPoolLike, n: int) -> int:
    """Prompts per ``generate`` call while evaluating: ``EVAL_CHUNK_SEQUENCES`` sequences
    (prompts x ``n``) per rollout worker, at least one prompt per worker."""
    workers = len(getattr(rollout, "handles", ())) or 1
    return max(1, EVAL_CHUNK_SEQUENCES // n) * workers


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a report."""
    k = report["overall"]["k"]
    cols = ["prompts", "pass@1", f"pass@{k}", f"maj@{k}", "mean_length", "truncation_rate"]
    lines = ["source".ljust(16) + "".join(c.rjust(16) for c in cols)]
    rows = list(report["sources"].items()) + [("overall", report["overall"])]
    for name, r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append(name[:16].ljust(16) + "".join(c.rjust(16) for c in cells))
    return "\n".join(lines)


def heldout_eval(ctx: RunContext, model_path: str) -> dict[str, Any]:
    """The recipe's ``eval`` section on ``model_path``; returns the overall summary."""
    ev = ctx.recipe.eval
    report = evaluate(ctx, model_path, sources=ctx.eval_sources(), k=ev.k,
                      temperature=ev.temperature, max_new_tokens=ev.max_new_tokens,
                      num_prompts=ev.num_prompts, seed=ctx.recipe.seed)
    return report["overall"]


def run_eval_stage(ctx: RunContext, stage: StageConfig, model_path: str) -> dict[str, Any]:
    """An ``eval`` stage: the full report to ``stages/NAME/report.json``; passes the model on."""
    ev = ctx.recipe.eval
    report = evaluate(ctx, model_path, sources=stage.sources or ctx.eval_sources(), k=ev.k,
                      temperature=ev.temperature, max_new_tokens=ev.max_new_tokens,
                      num_prompts=ev.num_prompts, seed=ctx.recipe.seed)
    out = ctx.stage_dir(stage.name) / "report.json"
    out.write_text(json.dumps(report, indent=2))
    print(format_table(report), flush=True)
    return {"checkpoint": model_path, "report": str(out), **report["overall"]}


def eval_checkpoint(recipe: Recipe, checkpoint: str, *, address: str | None = None,
                    output: str | None = None, verbose: bool = False) -> dict[str, Any]:
    """``rlsys eval``: evaluate ``checkpoint`` (a dir or short name) with the recipe's eval;
    worker output goes to the run dir's ``logs/`` unless ``verbose``."""
    from rlsys.controller.context import RunContext, resolve_run_dir
    from rlsys.modeling import resolve_model

    model_path = resolve_model(checkpoint)
    run_dir = resolve_run_dir(recipe, None)
    with RunContext(recipe, run_dir, address=address, verbose=verbose) as ctx:
        ev = recipe.eval
        report = evaluate(ctx, model_path, sources=ctx.eval_sources(), k=ev.k,
                          temperature=ev.temperature, max_new_tokens=ev.max_new_tokens,
                          num_prompts=ev.num_prompts, seed=recipe.seed)
    print(format_table(report), flush=True)
    if output:
        Path(output).write_text(json.dumps(report, indent=2))
        print(f"[eval] report written to {output}", flush=True)
    return report
