"""Node loss on a real three-node Ray cluster: the time from each kill to the run making progress
again (a new ``metrics.jsonl`` row).

The same scenario as ``tests/e2e/test_multinode.py`` (``tests.e2e.local_cluster``): a head
(reward) and two worker nodes (rollout, learner) started with ``ray start`` on this machine, a
GRPO run on ``configs/grpo_tiny.yaml`` with ``cluster.placement`` and a checkpoint every step;
during the run the rollout node, then the learner node, then (``kill -9``) the policy rank are
killed, each once the run has made progress since the previous kill. The seconds include Ray
noticing the loss (health checks 1 s apart, 5 misses; a killed process is seen at once), the new
actor's start (model load) and, for the learner, the restart from the last checkpoint plus the
step redone. Not a test: nothing is asserted here.

Run: ``.venv/bin/python bench/bench_multinode.py [--steps 7]``; writes
``bench/multinode_results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WHAT = {"node_a": "rollout node lost (ray start process group killed)",
        "node_b": "learner node lost (ray start process group killed)",
        "rank": "policy rank kill -9 (one process)"}
RECOVERY = {"node_a": "rollout worker recreated on another node, shard retried",
            "node_b": "learner group restarted from the last checkpoint (restart 1)",
            "rank": "learner group restarted from the last checkpoint (restart 2)"}


def main() -> None:
    """Run the scenario once and write the results table."""
    from tests.e2e.local_cluster import run_node_loss, start_role_cluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=7)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    cluster = start_role_cluster()
    try:
        with tempfile.TemporaryDirectory(prefix="rlmnbench") as work:
            result = run_node_loss(cluster, Path(work), steps=args.steps)
            state = json.loads((result["run_dir"] / "run_state.json").read_text())
            metrics = (result["run_dir"] / "metrics.jsonl").read_text().splitlines()
            steps = [json.loads(line)["step"] for line in metrics if line.strip()]
    finally:
        cluster.close()
    wall = time.monotonic() - t0
    if result["returncode"] != 0:
        raise SystemExit(f"run failed ({result['returncode']}):\n{result['output'][-4000:]}")
    once = f"steps 1..{args.steps} once each" if steps == list(range(1, args.steps + 1)) \
        else f"the steps {steps} (not each once!)"
    rows = [f"| {WHAT[e.what]} | {e.at_step} | {RECOVERY[e.what]} | "
            f"{e.seconds_to_progress:.0f} |" for e in result["events"]
            if e.seconds_to_progress is not None]
    text = "\n".join([
        "## Multi-node: time from a node kill to progress",
        "",
        f"`bench/bench_multinode.py` (the scenario of `tests/e2e/test_multinode.py`): three Ray "
        f"nodes on this machine (`ray start`: head with the reward worker, a rollout node, a "
        f"learner node), GRPO on `configs/grpo_tiny.yaml`, {args.steps} steps, a checkpoint "
        f"every step, `cluster.max_restarts: 3`. Seconds from the kill to the next new "
        f"`metrics.jsonl` row. The run finished after {len(state.get('restarts', []))} learner "
        f"restarts with {once} in `metrics.jsonl`; {wall:.0f} s in all. Machine: "
        f"2 shared cores, load average {load:.1f} at the start, so these are upper bounds.",
        "",
        "| kill | at step | recovery | s to progress |",
        "|---|---|---|---|",
        *rows,
        "",
    ])
    (ROOT / "bench" / "multinode_results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
