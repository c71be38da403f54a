"""Async GRPO vs the synchronous loop on CPU, same sample budget: steps/min and held-out accuracy.

Every variant runs the same GRPO recipe (SmolLM2-135M-Instruct, generated arithmetic, the sympy
verifier; 2 rollout workers + 1 learner rank, 1 CPU each; ``tis_cap`` 2 everywhere) for the same
number of steps, prompts and samples, through the real CLI (``rlsys train``, local Ray):

* ``sync``: generate, score, train, sync weights, in turn;
* ``async k=1, 2, 4``: ``algo.async_rollout`` with ``max_staleness`` k (the buffer holds k
  generations) and partial rollouts (``partial_rollout_chunk``: half the response length); the
  weights go learner rank 0 -> workers over the collective (``weight_sync: auto``), staged in
  each worker beside its running generation;
* ``k1-os``: async k=1 with ``weight_sync: object_store`` (the driver publishes the weights),
  to compare the sync phase;
* ``sync-1w`` / ``k1-1w``: one rollout worker instead of two (``--only sync-1w,k1-1w
  --append``): two busy processes on two cores, so async's overlap has an idle core to use.

Per variant: the stage's steps/min (steps over the summed ``time/step_s``), the mean seconds of
the ``sync`` phase per step and how the weights travelled (``sync/collective``), the run's wall
time,
mean and max staleness, the samples dropped as stale, and the held-out greedy accuracy after
the stage (``run_state.json``). Writes ``bench/async_results.md`` with the load average, since
the machine is shared. Not a test: nothing here asserts a number.

    .venv/bin/python bench/bench_async.py [--steps 6] [--heldout 20] [--only sync,k2] [--append]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "async_results.md"
#: variant -> (max_staleness or None for the synchronous loop, rollout.weight_sync, rollout
#: workers)
VARIANTS = {"sync": (None, "auto", 2), "k1": (1, "auto", 2), "k2": (2, "auto", 2),
            "k4": (4, "auto", 2), "k1-os": (1, "object_store", 2),
            "sync-1w": (None, "auto", 1), "k1-1w": (1, "auto", 1)}


def recipe(steps: int, heldout: int, variant: tuple[int | None, str, int], chunk: int) -> dict:
    """The benchmark recipe; ``k`` None = synchronous, else async with ``max_staleness`` k;
    weights over ``weight_sync``."""
    k, weight_sync, workers = variant
    algo = {"estimator": "grpo", "clip_low": 0.2, "clip_high": 0.28, "tis_cap": 2.0}
    if k is not None:
        algo.update(async_rollout=True, max_staleness=k, partial_rollout_chunk=chunk)
    return {
        "name": "bench_async", "seed": 0,
        "model": {"path": "smollm2-135m-instruct", "dtype": "float32",
                  "system_prompt": "Solve the math word problem. Show the calculation, then give "
                                   "the final answer as \\boxed{N}."},
        "data": {"sources": [
            {"name": "arith_rl", "generator": "arithmetic",
             "generator_kwargs": {"num": 256, "seed": 0}, "kind": "prompt"},
            {"name": "heldout", "generator": "arithmetic",
             "generator_kwargs": {"num": heldout, "seed": 0, "split": "eval"},
             "kind": "prompt", "split": "eval"}]},
        "rollout": {"engine": "hf", "num_workers": workers, "num_cpus_per_worker": 1, "n": 4,
                    "prompts_per_step": 4, "temperature": 0.8, "max_new_tokens": 2 * chunk,
                    "weight_sync": weight_sync},
        "reward": {"type": "math", "kwargs": {"format_bonus": 0.1}},
        "learner": {"num_ranks": 1, "num_cpus_per_rank": 1, "zero_stage": 0, "lr": 2.0e-5,
                    "micro_batch_size": 8, "schedule": {"name": "constant"}},
        "checkpoint": {"every_n_steps": 0},
        "logging": {"trackers": [], "plot": False},
        "eval": {"sources": ["heldout"], "temperature": 0.0, "max_new_tokens": 48},
        "stages": [{"name": "grpo", "kind": "grpo", "steps": steps, "sources": ["arith_rl"],
                    "eval_after": True, "algo": algo}],
    }


def run_variant(name: str, data: dict, work: Path) -> dict:
    """Train one variant through the CLI; its timing, staleness and held-out numbers."""
    path, run_dir = work / f"{name}.yaml", work / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rlsys.cli", "train", str(path), "--run-dir",
                           str(run_dir)], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: rlsys train failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("stage") == "grpo"]
    state = json.loads((run_dir / "run_state.json").read_text())
    accuracy = [e["accuracy"] for e in state["evals"] if "grpo" in e["label"]]
    loop_s = sum(r["time/step_s"] for r in rows)
    return {"name": name, "steps": len(rows), "loop_s": loop_s,
            "steps_per_min": 60 * len(rows) / loop_s, "wall_s": wall,
            "sync_s": sum(r.get("time/sync", 0.0) for r in rows) / len(rows),
            "via": "collective" if all(r.get("sync/collective") for r in rows) else
                   "object store",
            "staleness_max": max(r["staleness"] for r in rows),
            "staleness_mean": sum(r.get("async/staleness_mean", 0.0) for r in rows) / len(rows),
            "dropped": sum(r.get("async/dropped_stale", 0.0) for r in rows),
            "samples": sum(r["samples"] for r in rows),
            "reward": sum(r["reward/mean"] for r in rows) / len(rows),
            "heldout": accuracy[-1] if accuracy else float("nan")}


def report(results: list[dict], args: argparse.Namespace, load: tuple[str, str]) -> str:
    """The markdown section for BENCHMARKS.md."""
    lines = ["## Async rollouts vs the synchronous loop (CPU)", "",
             f"GRPO on SmolLM2-135M-Instruct (generated arithmetic, sympy verifier), {args.steps} "
             f"steps x 4 prompts x 4 samples, 2 rollout workers + 1 learner rank (1 CPU each), "
             f"{2 * args.chunk} new tokens; async variants use partial rollouts "
             f"(`partial_rollout_chunk: {args.chunk}`) and a buffer of k generations. Held-out: "
             f"greedy accuracy on {args.heldout} eval-split problems after the stage. "
             f"Command: `.venv/bin/python bench/bench_async.py --steps {args.steps} "
             f"--heldout {args.heldout}`.", "",
             f"Machine load (`uptime`) at start: {load[0]}; at the end: {load[1]} (2 cores, "
             f"shared: seconds are upper bounds and noisy).", "",
             "| variant | steps/min | loop s | sync s/step | weights via | run wall s | "
             "staleness max | staleness mean | dropped stale | samples trained | reward mean | "
             "held-out acc |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['steps_per_min']:.2f} | {r['loop_s']:.0f} | "
                     f"{r['sync_s']:.2f} | {r['via']} | "
                     f"{r['wall_s']:.0f} | {r['staleness_max']:.0f} | {r['staleness_mean']:.2f} | "
                     f"{r['dropped']:.0f} | {r['samples']:.0f} | {r['reward']:.3f} | "
                     f"{r['heldout']:.2f} |")
    return "\n".join(lines) + "\n"


def uptime() -> str:
    """``uptime``'s load averages."""
    out = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return out.split("load average:")[-1].strip() if "load average" in out else \
        " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    """Run the variants, print the table and write ``bench/async_results.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--heldout", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=16, help="partial-rollout chunk (tokens)")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--append", action="store_true",
                        help="add these rows to the existing results table")
    args = parser.parse_args()
    load_start = uptime()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_async_") as tmp:
        for name in args.only.split(","):
            results.append(run_variant(name, recipe(args.steps, args.heldout, VARIANTS[name],
                                                    args.chunk), Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    text = report(results, args, (load_start, uptime()))
    if args.append and RESULTS.exists():
        rows = [line for line in text.splitlines()
                if line.startswith("| ") and not line.startswith("| variant")]
        text = RESULTS.read_text().rstrip() + "\n" + "\n".join(rows) + "\n\n" + \
            f"Rows {', '.join(r['name'] for r in results)} appended; load at their start: " \
            f"{load_start}.\n"
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
