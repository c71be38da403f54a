"""A GRPO run on a real three-node Ray cluster (``ray start`` head + two workers, each with its
own label/resource) survives losing nodes: rollout, reward and learner start on their own
nodes (``cluster.placement``); killing the rollout node recreates the rollout worker on
another node; killing the learner node, and then ``kill -9`` of the policy rank, restarts the
learner group from the last checkpoint (``cluster.max_restarts``); the run finishes with every
step in ``metrics.jsonl`` exactly once. The cluster is killed by process group in ``finally``.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import stage_rows
from tests.e2e.local_cluster import placements, run_node_loss, start_role_cluster

pytestmark = pytest.mark.slow

STEPS = 7


def test_grpo_survives_losing_the_rollout_node_the_learner_node_and_a_rank(tmp_path):
    cluster = start_role_cluster()
    try:
        result = run_node_loss(cluster, tmp_path, steps=STEPS)
    finally:
        cluster.close()
    out = result["output"]
    assert result["returncode"] == 0, out[-6000:]
    events = result["events"]
    assert [e.what for e in events] == ["node_a", "node_b", "rank"], (events, out[-4000:])
    assert all(e.seconds_to_progress is not None for e in events), events

    where = placements(out)
    first = {p["name"]: p for p in reversed(where)}  # the first line of each actor
    assert first["rollout-0"]["labels"] == {"rlsys-role": "rollout"}, where
    assert first["reward-0"]["labels"] == {"rlsys-role": "reward"}, where
    assert first["policy-0"]["labels"] == {"rlsys-role": "learner"}, where
    assert len({first[n]["node"] for n in ("rollout-0", "reward-0", "policy-0")}) == 3, where
    # the lost nodes' actors came back on nodes still alive
    rollouts = [p for p in where if p["name"] == "rollout-0"]
    assert len(rollouts) >= 2 and rollouts[1]["node"] != rollouts[0]["node"], where
    policies = [p for p in where if p["name"] == "policy-0"]
    assert len(policies) >= 3, where
    assert policies[1]["node"] != first["policy-0"]["node"], where

    run_dir = result["run_dir"]
    state = json.loads((run_dir / "run_state.json").read_text())
    assert state["stages"]["grpo"]["done"], state
    assert len(state["restarts"]) == 2, state["restarts"]  # node_b, then the rank
    assert all("learner rank 0" in r["error"] for r in state["restarts"]), state["restarts"]
    steps = [row["step"] for row in stage_rows(run_dir, "grpo")]
    assert steps == list(range(1, STEPS + 1)), steps
    assert out.count("restart 1/3 from the last checkpoint") == 1, out[-4000:]
    assert out.count("restart 2/3 from the last checkpoint") == 1, out[-4000:]
