"""Run a recipe: prepare the run dir, start (or join) Ray, run each stage in order from the
previous stage's checkpoint, resume finished/partial stages, print the summary.

Run dir layout::

    RUN_DIR/recipe.yaml           the resolved recipe
    RUN_DIR/run_state.json        finished stages, their final checkpoints, evals and restarts
                                  after a lost learner (atomic writes)
    RUN_DIR/metrics.jsonl         one JSON object per step, all stages
    RUN_DIR/stages/NAME/ckpt/...  per-stage checkpoints (learner.checkpoint layout)
    RUN_DIR/stages/NAME/final     the stage's output model (an HF directory)

This module owns the order of things; the stage loops live in ``supervised``, ``rl``,
``evaluate`` and ``synthetic``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlsys.config import Recipe, StageConfig
from rlsys.controller.context import RunContext, resolve_run_dir


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunState:
    """Which stages finished, their outputs, and the eval results so far (``run_state.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"stages": {}, "evals": []}
        if path.exists():
            self.data = json.loads(path.read_text())

    def done(self, stage: str) -> str | None:
        """The final checkpoint of ``stage`` if it finished, else None."""
        entry = self.data["stages"].get(stage)
        return entry["checkpoint"] if entry and entry.get("done") else None

    def finish(self, stage: str, checkpoint: str, summary: dict[str, Any]) -> None:
        """Record a finished stage."""
        self.data["stages"][stage] = {"done": True, "checkpoint": checkpoint, **summary}
        _write_json_atomic(self.path, self.data)

    def add_eval(self, label: str, result: dict[str, Any]) -> None:
        """Record an eval result (replacing one with the same label)."""
        self.data["evals"] = [e for e in self.data["evals"] if e["label"] != label]
        self.data["evals"].append({"label": label, **result})
        _write_json_atomic(self.path, self.data)

    def add_restart(self, stage: str, entry: dict[str, Any]) -> None:
        """Record a restart of ``stage`` after a lost learner (``restarts`` list)."""
        self.data.setdefault("restarts", []).append({"stage": stage, **entry})
        _write_json_atomic(self.path, self.data)

    def eval_result(self, label: str) -> dict[str, Any] | None:
        """A recorded eval result by label."""
        return next((e for e in self.data["evals"] if e["label"] == label), None)


#: a stage loop: (run context, stage, input model dir) -> {"checkpoint": output dir, ...}
StageRunner = Callable[[RunContext, StageConfig, str], dict[str, Any]]


def _stage_runner(kind: str) -> StageRunner:
    from rlsys.config import DATA_GEN_KINDS, RL_KINDS

    if kind in ("cpt", "sft"):
        from rlsys.controller.supervised import run_sft_stage

        return run_sft_stage
    if kind == "dpo":
        from rlsys.controller.supervised import run_dpo_stage

        return run_dpo_stage
    if kind in RL_KINDS:
        from rlsys.controller.rl import run_rl_stage

        return run_rl_stage
    if kind == "eval":
        from rlsys.controller.evaluate import run_eval_stage

        return run_eval_stage
    if kind in DATA_GEN_KINDS:
        from rlsys.controller.synthetic import run_synthetic_stage

        return run_synthetic_stage
    if kind == "rm":
        from rlsys.controller.reward_model import run_rm_stage

        return run_rm_stage
    if kind == "merge":
        from rlsys.controller.merge import run_merge_stage

        return run_merge_stage
    raise ValueError(f"no runner for stage kind {kind!r}")


def _maybe_eval(ctx: RunContext, state: RunState, label: str, model_path: str) -> None:
    result = state.eval_result(label)
    if result is None:
        from rlsys.controller.evaluate import heldout_eval

        result = heldout_eval(ctx, model_path)
        state.add_eval(label, result)
    print(f"[eval] {label}: accuracy {result['accuracy']:.2f} "
          f"({result['correct']}/{result['total']})", flush=True)


def run_header(recipe: Recipe, ctx: RunContext) -> str:
    """The first lines of a run: recipe and stages, run dir and logs, resources, engine."""
    stages = ", ".join(f"{s.name}({s.kind})" for s in recipe.stages)
    lc, rc = recipe.learner, recipe.rollout
    logs = f"worker and library logs: {ctx.log_dir}/" if ctx.log_dir is not None else \
        "worker output: shown here (--verbose)"
    return "\n".join([
        f"rlsys train: recipe {recipe.name!r}, {len(recipe.stages)} stage(s): {stages}",
        f"  run dir: {ctx.run_dir}; {logs}",
        f"  resources: {ctx.ray_description}; learner {lc.num_ranks} rank(s) x "
        f"{lc.num_cpus_per_rank:g} CPU, {lc.num_gpus_per_rank:g} GPU",
        f"  model: {recipe.model.path}; rollout engine: {rc.engine} x {rc.num_workers} "
        f"worker(s)"])


#: metrics shown in a stage's summary line, when the stage logs them
SUMMARY_KEYS = ("loss", "reward/mean", "accuracy/drawn", "eval/accuracy")


def stage_summary(run_dir: Path, stage: StageConfig, seconds: float, checkpoint: str
                  ) -> str:
    """``[NAME] done in 21s: step 3/3, loss 0.0123, reward/mean 0.25 -> CHECKPOINT``: the
    stage's last ``metrics.jsonl`` row, when it logged steps."""
    from rlsys.controller.metrics import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl", stage.name)
    parts = []
    if rows:
        last = rows[-1]
        parts.append(f"step {last['step']}/{stage.steps}")
        parts += [f"{key} {last[key]:.4g}" for key in SUMMARY_KEYS
                  if isinstance(last.get(key), int | float)]
    return f"[{stage.name}] done in {seconds:.0f}s" + (": " + ", ".join(parts) if parts else "") \
        + f" -> {checkpoint}"


def run_stage_with_restarts(ctx: RunContext, state: RunState, stage: StageConfig,
                            model_path: str) -> dict[str, Any]:
    """Run ``stage``; when a learner rank is lost (its node died, ``kill -9``, no answer
    within the call timeout) stop the groups left, and run the stage again -- it resumes from
    its last checkpoint, and the resume drops the ``metrics.jsonl`` rows after it -- at most
    ``cluster.max_restarts`` times (each recorded in ``run_state.json``); after that, or
    without ``checkpoint.resume``, the ``LearnerLostError`` ends the run (exit 3). Ray and
    the worker pools are kept (a pool recreates its own dead workers)."""
    from learner.errors import LearnerLostError

    limit = ctx.recipe.cluster.max_restarts if ctx.recipe.checkpoint.resume else 0
    restarts = 0
    while True:
        try:
            return _stage_runner(stage.kind)(ctx, stage, model_path)
        except LearnerLostError as exc:
            if restarts >= limit:
                raise
            restarts += 1
            lost_at = time.time()
            from learner.launch import shutdown_live_groups

            stopped = shutdown_live_groups()
            state.add_restart(stage.name, {"restart": restarts, "error": str(exc),
                                           "time": lost_at, "groups_stopped": stopped})
            print(f"[{stage.name}] learner lost ({exc}); restart {restarts}/{limit} from the "
                  f"last checkpoint", flush=True)


def run_recipe(recipe: Recipe, *, address: str | None = None, run_dir: str | None = None,
               verbose: bool = False) -> Path:
    """Run every stage of ``recipe``; returns the run dir. Re-running resumes.

    Quiet unless ``verbose``: the terminal shows a header, per stage a start line, its
    progress bar and a summary line, then the final lines; worker output and this process's
    warnings go to ``RUN_DIR/logs/`` (``RunContext``)."""
    out = resolve_run_dir(recipe, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"),
                                                    sort_keys=False))
    state = RunState(out / "run_state.json")
    t0 = time.monotonic()
    with RunContext(recipe, out, address=address, verbose=verbose) as ctx:
        print(run_header(recipe, ctx), flush=True)
        model_path = ctx.base_model_path()
        chain: list[str] = []
        for stage in recipe.stages:
            if stage.eval_before and not chain:
                _maybe_eval(ctx, state, "base", model_path)
                chain.append("base")
            finished = state.done(stage.name) if recipe.checkpoint.resume else None
            if finished:
                print(f"[{stage.name}] already finished -> {finished}", flush=True)
                model_path = finished
            else:
                print(f"[{stage.name}] starting ({stage.kind}, {stage.steps} steps) "
                      f"from {model_path}", flush=True)
                started = time.monotonic()
                result = run_stage_with_restarts(ctx, state, stage, model_path)
                model_path = result.pop("checkpoint")
                state.finish(stage.name, model_path, result)
                print(stage_summary(out, stage, time.monotonic() - started, model_path),
                      flush=True)
            if stage.eval_after:
                _maybe_eval(ctx, state, stage.name, model_path)
                chain.append(stage.name)
        ctx.close()
    print(f"[done] {len(recipe.stages)} stage(s) in {time.monotonic() - t0:.0f}s; "
          f"final model: {model_path}", flush=True)
    if chain:
        print(accuracy_summary(state, chain, out), flush=True)
    return out


def accuracy_summary(state: RunState, chain: list[str], run_dir: Path) -> str:
    """``held-out accuracy: 0.07 -> 0.35 (sft) -> 0.42 (grpo) (run dir: PATH)``."""
    parts = []
    for label in chain:
        result = state.eval_result(label)
        if result is None:
            raise RuntimeError(f"no held-out eval recorded for {label!r}")
        acc = result["accuracy"]
        parts.append(f"{acc:.2f}" if label == "base" else f"{acc:.2f} ({label})")
    return f"held-out accuracy: {' -> '.join(parts)} (run dir: {run_dir})"
