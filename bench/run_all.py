"""Run every benchmark under bench/ (one command: `make bench`) and assemble BENCHMARKS.md
from their result files. Each benchmark compares against its named peer in the same run and
writes `bench/<name>_results.md`; this script only orders and concatenates them.

Usage: python bench/run_all.py [--only math,code,...] [--assemble-only]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# (name, script, results file, what it compares)
SUITE = [
    ("math", "bench_math.py", "math_results.md", "sympy verifier vs math-verify"),
    ("code", "bench_code.py", "code_results.md", "sandbox executions/s"),
    ("service", "bench_service.py", "service_results.md", "reward REST service latency"),
    ("packing", "bench_packing.py", "packing_results.md", "SFT packing vs padding vs TRL"),
    ("weight_sync", "bench_weight_sync.py", "weight_sync_results.md", "CPU weight sync GB/s"),
    ("sync", "bench_sync.py", "sync_results.md",
     "sync s/step and driver RSS: collective vs object store"),
    ("sync_vllm", "bench_sync.py --engine vllm", "sync_vllm_results.md",
     "sync into vLLM: its workers join the group vs its actor vs object store"),
    ("grpo", "bench_grpo.py", "grpo_results.md", "GRPO step vs TRL GRPOTrainer"),
    ("lora", "bench_lora.py", "lora_results.md", "LoRA adapter sync bytes/s and learner RSS"),
    ("tools", "bench_tools.py", "tools_results.md", "sandboxed tool-call latency"),
    ("agent", "bench_agent.py", "agent_results.md", "multi-turn vs single-turn tokens/s"),
    ("agent_trl", "bench_agent_trl.py", "agent_trl_results.md",
     "multi-turn GRPO step vs TRL GRPOTrainer with tools"),
    ("rlhf", "bench_rlhf.py", "rlhf_results.md", "SFT -> RM -> PPO on CPU"),
    ("async", "bench_async.py", "async_results.md", "async rollouts (k = 1, 2, 4) vs sync loop"),
    ("multinode", "bench_multinode.py", "multinode_results.md",
     "time from a node kill to progress"),
    ("quickstart", "(make demo)", "quickstart_results.md", "held-out accuracy of the demo"),
    ("agent_quickstart", "(rlsys train configs/agent_quickstart.yaml)",
     "agent_quickstart_results.md", "held-out accuracy of the agentic demo"),
    ("gpu", "(scripts/gpu_check.sh, on a GPU)", "gpu_results.md", "GPU learner/engine/sync check"),
]

HEADER = """# Benchmarks

Produced by `make bench` (`bench/run_all.py`), which runs each script below and concatenates
its results file. Every comparison runs the named peer in the same run on the same machine
(peers live in their own virtualenvs under `bench/.venv-*`, never in the project's). Machine:
2 cores, no GPU (the last section ran on a lent H100). Each section says how loaded the machine
was when it ran: the sections up to GRPO and the quickstart were last re-measured on an
otherwise idle machine; LoRA, tools and RLHF were measured on a loaded machine (load average
13-40 on 2 cores), so their seconds are upper bounds (bytes, memory and accuracies are not
affected by load). Tests never assert these numbers.
"""


def run(name: str, script: str) -> float:
    """Run one benchmark script; returns its wall time."""
    t0 = time.monotonic()
    print(f"== {name}: {script}", flush=True)
    path, *args = script.split()
    subprocess.run([sys.executable, str(BENCH / path), *args], cwd=ROOT, check=True)
    return time.monotonic() - t0


def assemble() -> Path:
    """Write BENCHMARKS.md from the results files that exist."""
    parts = [HEADER]
    for name, script, results, what in SUITE:
        path = BENCH / results
        body = path.read_text().strip() if path.exists() else "_not run yet_"
        parts.append(f"\n<!-- {name}: bench/{script} ({what}) -->\n\n{body}\n")
    out = ROOT / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    return out


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated subset of: " +
                    ", ".join(n for n, *_ in SUITE))
    ap.add_argument("--assemble-only", action="store_true")
    args = ap.parse_args()
    chosen = {s for s in args.only.split(",") if s}
    if not args.assemble_only:
        for name, script, _, _ in SUITE:
            if (not chosen or name in chosen) and (BENCH / script.split()[0]).exists():
                print(f"   {name}: {run(name, script):.0f}s", flush=True)
    print(f"wrote {assemble()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
