"""GRPO step time: rlsys (Ray actors, HF engine) vs TRL's ``GRPOTrainer``, one run each, here.

Same model directory (``rlsys.modeling.resolve_model``), same prompts in the same step order
(``rlsys.tasks.generate_arithmetic``, drawn in the order rlsys's prompt sampler draws them), the
quickstart system prompt, group size, response length, temperature 0.8, lr 1e-5 (constant,
AdamW betas 0.9/0.95, grad clip 1), PPO clip 0.2/0.28 with token-mean loss, no KL (``kl_coef:
0`` / ``beta=0``), one optimizer step per generation batch, and the same answer check (the
``math`` reward; TRL's reward function calls the same ``rewards.math`` grader). The same torch
thread count on both sides (``--threads``, default: all cores): rlsys's rollout actor and
learner actor each reserve and use that many (they run one after the other within a step,
never at the same time), TRL's single process uses that many.

rlsys runs in this process through ``run_recipe`` (it starts Ray); per-step times come from
``RUN_DIR/metrics.jsonl`` (``time/step_s`` and the phases). TRL runs in its own venv
(``bench/.venv-trl``, trl 1.16) via ``bench/grpo_trl_worker.py``, never at the same time.

    .venv/bin/python bench/bench_grpo.py [--model smollm2-135m-instruct] [--steps 4]
        [--prompts 4] [--group 4] [--max-new-tokens 32] [--threads N] [--skip-trl]

Writes ``bench/grpo_results.md``. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRL_PYTHON = os.path.join(HERE, ".venv-trl", "bin", "python")
PHASES = ("generate", "reward", "logprobs", "train", "sync", "other")
SOURCE = "arith_rl"
SEED = 0
LR, TEMPERATURE, CLIP_LOW, CLIP_HIGH = 1e-5, 0.8, 0.2, 0.28


def quickstart_system_prompt() -> str:
    """The system prompt of ``configs/quickstart.yaml``."""
    from rlsys.config import load_recipe

    return load_recipe(os.path.join(ROOT, "configs", "quickstart.yaml")).model.system_prompt


def build_recipe(args: argparse.Namespace, system_prompt: str):
    """The rlsys GRPO recipe of the benchmark (HF engine, 1 rollout worker, 1 learner rank)."""
    from rlsys.config import recipe_from_dict

    rows = args.prompts * args.group
    return recipe_from_dict({
        "name": "bench_grpo", "seed": SEED,
        "model": {"path": args.model, "dtype": "float32", "system_prompt": system_prompt},
        "data": {"sources": [{"name": SOURCE, "generator": "arithmetic", "kind": "prompt",
                              "generator_kwargs": {"num": args.prompts * args.steps,
                                                   "seed": SEED}}]},
        "rollout": {"engine": "hf", "num_workers": 1, "n": args.group,
                    "prompts_per_step": args.prompts, "temperature": TEMPERATURE,
                    "max_new_tokens": args.max_new_tokens,
                    "num_cpus_per_worker": args.threads,
                    "engine_kwargs": {"num_threads": args.threads, "max_batch_size": rows}},
        "reward": {"type": "math"},
        "learner": {"num_ranks": 1, "num_cpus_per_rank": args.threads, "zero_stage": 0,
                    "lr": LR, "weight_decay": 0.0,
                    "betas": [0.9, 0.95], "grad_clip": 1.0, "micro_batch_size": rows,
                    "schedule": {"name": "constant"}},
        "checkpoint": {"every_n_steps": 0, "resume": False},
        "logging": {"tensorboard": False, "progress": False, "plot": False},
        "stages": [{"name": "grpo", "kind": "grpo", "steps": args.steps,
                    "algo": {"estimator": "grpo", "clip_low": CLIP_LOW, "clip_high": CLIP_HIGH,
                             "aggregation": "token_mean", "kl_coef": 0.0}}],
    }, source="bench_grpo")


def prompts_in_step_order(recipe, count: int, generate=None) -> list[dict]:
    """The records rlsys's RL stage draws from the recipe's first source, in its order (same
    sampler, same seed); ``generate`` is the source's generator (default: arithmetic)."""
    from rlsys.data.mixture import MixtureSampler
    from rlsys.tasks.arithmetic import generate_arithmetic

    source = recipe.data.sources[0]
    records = (generate or generate_arithmetic)(**source.generator_kwargs)
    sampler = MixtureSampler({source.name: len(records)}, {source.name: source.weight},
                             seed=recipe.seed)
    return [records[next(sampler)[1]] for _ in range(count)]


def run_rlsys(recipe, workdir: str) -> dict:
    """``run_recipe`` in this process; per-step rows of ``metrics.jsonl`` and the wall time."""
    from rlsys.controller.runner import run_recipe

    t0 = time.perf_counter()
    run_dir = run_recipe(recipe, run_dir=os.path.join(workdir, "rlsys_run"))
    wall = time.perf_counter() - t0
    with open(run_dir / "metrics.jsonl") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rows = [r for r in rows if r.get("stage") == "grpo" and "time/step_s" in r]
    return {"rows": rows, "wall_s": wall}


def run_trl(spec: dict, workdir: str) -> dict:
    """``grpo_trl_worker.py`` in the TRL venv; its RESULTS JSON plus the process wall time."""
    if not os.path.exists(TRL_PYTHON):
        raise SystemExit(f"TRL venv missing: {TRL_PYTHON} (see bench/bench_packing.py)")
    spec_path = os.path.join(workdir, "trl_spec.json")
    with open(spec_path, "w") as handle:
        json.dump(spec, handle)
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]),
           "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    proc = subprocess.run([TRL_PYTHON, os.path.join(HERE, "grpo_trl_worker.py"), spec_path],
                          capture_output=True, text=True, env=env, cwd=workdir)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"TRL worker failed (rc {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULTS "):]), "wall_s": wall}


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def summarize_rlsys(result: dict) -> dict:
    """Warm-up step, mean step after it, and mean seconds per phase after it."""
    rows = sorted(result["rows"], key=lambda r: r["step"])
    later = rows[1:]
    return {"warmup_s": rows[0]["time/step_s"], "mean_s": _mean([r["time/step_s"] for r in later]),
            "steps": [r["time/step_s"] for r in rows],
            "phases": {p: _mean([r.get(f"time/{p}", 0.0) for r in later]) for p in PHASES},
            "other_frac": _mean([r["time/other_frac"] for r in later]),
            "warmup_phases": {p: rows[0].get(f"time/{p}", 0.0) for p in PHASES},
            "reward": [r.get("reward/mean") for r in rows], "wall_s": result["wall_s"]}


def summarize_trl(result: dict) -> dict:
    """Warm-up step, mean step after it (begin->end and end->end), and a coarse breakdown."""
    steps = sorted(result["steps"], key=lambda s: s["step"])
    later = steps[1:]
    gen = _mean([s.get("generate", 0.0) for s in later])
    reward = _mean([s.get("reward", 0.0) for s in later])
    # training_step holds generate+score; the rest of it is the loss forward/backward
    train = _mean([s.get("training_step", 0.0) - s.get("generate_and_score", 0.0)
                   for s in later])
    mean = _mean([s["begin_to_end"] for s in later])
    return {"warmup_s": steps[0]["begin_to_end"], "mean_s": mean,
            "mean_end_to_end_s": _mean([s["end_to_end"] for s in later]),
            "steps": [s["begin_to_end"] for s in steps],
            "phases": {"generate": gen, "reward": reward, "train": train,
                       "other": mean - gen - reward - train},
            "reward": result.get("reward_mean"), "wall_s": result["wall_s"]}


def load_avg() -> str:
    """The 1/5/15-minute load averages as text."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _fmt_steps(values: list[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def format_tables(rlsys: dict, trl: dict | None) -> str:
    """Markdown: step times of both, then the per-phase breakdowns."""
    out = ["| setup | warm-up step 1 (s) | mean step 2.. (s) | all steps (s) | process wall (s) |",
           "|---|---|---|---|---|",
           f"| rlsys GRPO | {rlsys['warmup_s']:.2f} | **{rlsys['mean_s']:.2f}** | "
           f"{_fmt_steps(rlsys['steps'])} | {rlsys['wall_s']:.0f} |"]
    if trl is not None:
        out.append(f"| TRL GRPOTrainer | {trl['warmup_s']:.2f} | **{trl['mean_s']:.2f}** | "
                   f"{_fmt_steps(trl['steps'])} | {trl['wall_s']:.0f} |")
    out += ["", "rlsys per-phase time, mean over steps 2.. (from `metrics.jsonl`):", "",
            "| phase | seconds | % of step |", "|---|---|---|"]
    out += [f"| {p} | {rlsys['phases'][p]:.3f} | {rlsys['phases'][p] / rlsys['mean_s']:.1%} |"
            for p in PHASES]
    out.append(f"| step | {rlsys['mean_s']:.3f} | 100% |")
    if trl is not None:
        out += ["", "TRL coarse breakdown, mean over steps 2.. (timers around its methods; "
                "`train` = `training_step` minus generate-and-score, `other` = the rest of the "
                "step: optimizer step, grad clip, scheduler):", "",
                "| phase | seconds | % of step |", "|---|---|---|"]
        out += [f"| {p} | {s:.3f} | {s / trl['mean_s']:.1%} |" for p, s in trl["phases"].items()]
    return "\n".join(out) + "\n"


def reading(args, rlsys: dict, trl: dict | None) -> list[str]:
    """Plain statements derived from the numbers (goal checks and caveats)."""
    other = rlsys["phases"]["other"] / rlsys["mean_s"]
    notes = [f"Orchestration (`other`) is {other:.1%} of the rlsys step "
             f"({'within' if other <= 0.10 else 'ABOVE'} the 10 % goal); `sync` (the Ray weight "
             f"push to the rollout actor) adds {rlsys['phases']['sync'] / rlsys['mean_s']:.1%}."]
    top = max(PHASES, key=lambda p: rlsys["phases"][p])
    notes.append(f"The dominant rlsys phase is `{top}` "
                 f"({rlsys['phases'][top] / rlsys['mean_s']:.0%} of the step).")
    if trl is not None:
        ratio = trl["mean_s"] / rlsys["mean_s"]
        notes.append(
            f"Speed-up (TRL mean step / rlsys mean step, steps 2..): **{ratio:.2f}x** "
            f"({'meets' if ratio >= 1.5 else 'does NOT meet'} the 1.5x goal). Counting TRL's step "
            f"from one step's end to the next (adds its data fetch and logging): "
            f"{trl['mean_end_to_end_s'] / rlsys['mean_s']:.2f}x.")
        notes.append(
            f"Generation: rlsys {rlsys['phases']['generate']:.2f} s vs TRL "
            f"{trl['phases']['generate']:.2f} s; train: rlsys {rlsys['phases']['train']:.2f} s "
            f"vs TRL {trl['phases']['train']:.2f} s per step.")
        r_later, t_later = rlsys["steps"][1:], trl["steps"][1:]
        notes.append(
            f"Spread: rlsys steps 2.. took {min(r_later):.1f}-{max(r_later):.1f} s, TRL "
            f"{min(t_later):.1f}-{max(t_later):.1f} s; pairing the extremes gives ratios from "
            f"{min(t_later) / max(r_later):.2f}x to {max(t_later) / min(r_later):.2f}x, so with "
            f"this few steps under this load the ratio is uncertain by about that much.")
        notes.append(
            f"All steps including warm-up: rlsys {sum(rlsys['steps']):.0f} s vs TRL "
            f"{sum(trl['steps']):.0f} s ({sum(trl['steps']) / sum(rlsys['steps']):.2f}x). "
            f"rlsys's warm-up step spent {rlsys['warmup_phases']['train']:.1f} s in train and "
            f"{rlsys['warmup_phases']['sync']:.1f} s in sync (later steps: "
            f"{rlsys['phases']['train']:.1f} s and {rlsys['phases']['sync']:.1f} s): first-call "
            f"costs in the learner actor and the first weight push.")
        startup = rlsys["wall_s"] - sum(rlsys["steps"])
        notes.append(
            f"Process wall time: rlsys {rlsys['wall_s']:.0f} s, of which {startup:.0f} s is "
            f"outside the steps (Ray start, actor start, model loads, final save); TRL "
            f"{trl['wall_s']:.0f} s ({trl['wall_s'] - sum(trl['steps']):.0f} s outside its "
            f"steps). Start-up is not part of the step times compared above.")
        notes.append(f"Mean reward per step: rlsys {_fmt_steps(rlsys['reward'], 2)}; TRL "
                     f"{_fmt_steps(trl['reward'] or [], 2)} (sampling differs, so only a sanity "
                     f"check that both train on the same task).")
    if args.steps < 4:
        notes.append(f"Run with {args.steps} steps instead of the default 4 to fit the time "
                     f"budget on the loaded machine.")
    notes.append(f"{os.cpu_count()} cores; the load averages above show whether anything else "
                 "ran. Each setup ran once, so step times carry that noise.")
    return notes


def write_report(args, command: str, model_dir: str, rlsys: dict, trl: dict | None,
                 loads: dict, out: str) -> None:
    """Print the tables and write the results file."""
    settings = (f"model `{args.model}` ({model_dir}), {args.steps} steps x {args.prompts} prompts "
                f"x group {args.group} = {args.prompts * args.group} samples/step, "
                f"max {args.max_new_tokens} new tokens, T={TEMPERATURE}, lr {LR}, clip "
                f"{CLIP_LOW}/{CLIP_HIGH}, no KL, fp32, {args.threads} torch thread(s) per process, "
                f"{os.cpu_count()} cores")
    text = ["# GRPO step time: rlsys vs TRL GRPOTrainer (bench/bench_grpo.py)", "",
            f"Command: `.venv/bin/python {command}` ({time.strftime('%Y-%m-%d %H:%M')})", "",
            f"Settings: {settings}.", "",
            "Load average (1/5/15 min): " + "; ".join(f"{k}: {v}" for k, v in loads.items()),
            "", format_tables(rlsys, trl), "## Reading", ""]
    text += [f"* {n}" for n in reading(args, rlsys, trl)]
    body = "\n".join(text) + "\n"
    print(body)
    with open(out, "w") as handle:
        handle.write(body)


def main() -> None:
    """Parse arguments, run rlsys then TRL, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads per process on both sides (default: all cores)")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "grpo_results.md"))
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is reported as warm-up)")
    if args.group < 2:
        parser.error("--group must be >= 2 (GRPO needs a group to compare within)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, ROOT)
    import torch

    from rlsys.modeling import resolve_model

    torch.set_num_threads(args.threads)
    command = "bench/bench_grpo.py " + shlex.join(sys.argv[1:])
    system_prompt = quickstart_system_prompt()
    recipe = build_recipe(args, system_prompt)
    model_dir = resolve_model(args.model)
    records = prompts_in_step_order(recipe, args.prompts * args.steps)
    loads = {"start": load_avg()}
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as workdir:
        rlsys = summarize_rlsys(run_rlsys(recipe, workdir))
        loads["after rlsys"] = load_avg()
        print("RLSYS " + json.dumps(rlsys), flush=True)  # kept in the log if TRL fails
        trl = None
        if not args.skip_trl:
            print(f"[bench] rlsys done; load {loads['after rlsys']}; starting TRL", flush=True)
            spec = {"model_dir": model_dir, "records": records, "system_prompt": system_prompt,
                    "steps": args.steps, "prompts": args.prompts, "group": args.group,
                    "max_new_tokens": args.max_new_tokens, "temperature": TEMPERATURE,
                    "lr": LR, "clip_low": CLIP_LOW, "clip_high": CLIP_HIGH,
                    "threads": args.threads}
            trl = summarize_trl(run_trl(spec, workdir))
            print("TRL " + json.dumps(trl), flush=True)
            loads["after TRL"] = load_avg()
    write_report(args, command, model_dir, rlsys, trl, loads, args.out)


if __name__ == "__main__":
    main()
