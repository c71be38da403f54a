"""Classic RLHF measured on CPU: SFT -> reward model -> PPO (``bench/rlhf_smollm2.yaml``), then
held-out samples of the SFT model (before PPO) and of the PPO model, each scored twice: by the
reward model the run trained (what PPO optimised) and by the sympy answer check (true
accuracy). The RM's held-out pair accuracy comes from the run (``run_state.json``).

    .venv/bin/python bench/bench_rlhf.py [--recipe bench/rlhf_smollm2.yaml] [--run-dir DIR]
        [--prompts 50] [--skip-train] [--set key=value ...]

Training runs through the real CLI (``rlsys train``, local Ray); the held-out samples are
greedy, generated in this process by the same HF rollout engine with the recipe's system
prompt. Prints a markdown report (paste it into ``bench/rlhf_results.md``). Not a test: nothing
here asserts a number.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def train(recipe: str, run_dir: str, overrides: list[str]) -> float:
    """Run ``rlsys train``; returns the wall time in seconds."""
    cmd = [sys.executable, "-m", "rlsys.cli", "train", recipe, "--run-dir", run_dir]
    for item in overrides:
        cmd += ["--set", item]
    print("$", shlex.join(cmd), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.monotonic() - t0


def heldout(recipe, num: int) -> list[dict]:
    """``num`` held-out arithmetic problems (the eval split, disjoint from training)."""
    from rlsys.tasks import generate_arithmetic

    seed = next(s.generator_kwargs.get("seed", 0) for s in recipe.data.sources
                if s.generator == "arithmetic")
    return generate_arithmetic(num, seed=seed, split="eval")


def sample_and_score(recipe, model_dir: str, rm_dir: str, problems: list[dict]) -> dict:
    """Greedy responses of ``model_dir``; mean RM reward and true accuracy (sympy check)."""
    import torch

    from actors.rollout import RolloutWorker
    from rewards import get_reward
    from rewards.base import RewardItem
    from rewards.model import ModelReward

    torch.set_num_threads(os.cpu_count() or 1)
    worker = RolloutWorker("hf", model_dir, system_prompt=recipe.model.system_prompt,
                           engine_kwargs={"num_threads": os.cpu_count() or 1})
    completions = worker.generate([p["prompt"] for p in problems], n=1, temperature=0.0,
                                  max_new_tokens=64)
    items = [RewardItem(problems[c.prompt_index]["prompt"], c.text,
                        problems[c.prompt_index]["answer"]) for c in completions]
    rm_scores = [s.value for s in ModelReward(rm_dir, max_length=256).score(items)]
    truth = get_reward("math").score(items)
    correct = [s.correct for s in truth]  # the rule of the held-out eval (Score.correct)
    return {"rm_reward": sum(rm_scores) / len(rm_scores),
            "accuracy": sum(correct) / len(correct), "n": len(items),
            "rm_reward_correct": _mean([r for r, c in zip(rm_scores, correct, strict=True) if c]),
            "rm_reward_wrong": _mean([r for r, c in zip(rm_scores, correct, strict=True)
                                      if not c])}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def main() -> None:
    """Train (unless ``--skip-train``), sample, score, print the report."""
    from rlsys.config import load_recipe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=os.path.join("bench", "rlhf_smollm2.yaml"))
    ap.add_argument("--run-dir", default=os.path.join("runs", "rlhf_smollm2"))
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    recipe = load_recipe(os.path.join(ROOT, args.recipe), overrides=args.overrides)
    run_dir = os.path.abspath(args.run_dir)
    wall = None if args.skip_train else train(args.recipe, run_dir, args.overrides)
    state = json.loads(open(os.path.join(run_dir, "run_state.json")).read())["stages"]
    rm = state["rm"]
    problems = heldout(recipe, args.prompts)
    rows = {label: sample_and_score(recipe, state[stage]["checkpoint"], rm["reward_model"],
                                    problems)
            for label, stage in (("SFT (before PPO)", "sft"), ("after PPO", "ppo"))}
    print(f"\nrecipe {args.recipe}, run dir {run_dir}"
          + (f", training wall time {wall / 60:.1f} min" if wall else ""))
    for key in rm["heldout_after"]:
        if key.endswith("pair_accuracy"):
            print(f"RM held-out {key}: {rm['heldout_before'][key]:.3f} (untrained head) -> "
                  f"{rm['heldout_after'][key]:.3f}")
    print(f"\n{args.prompts} held-out problems, greedy, 64 new tokens\n")
    print("| policy | RM reward (mean) | true accuracy | RM reward, correct | RM reward, wrong |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['rm_reward']:.3f} | {r['accuracy']:.2f} | "
              f"{_fmt(r['rm_reward_correct'])} | {_fmt(r['rm_reward_wrong'])} |")


if __name__ == "__main__":
    main()
