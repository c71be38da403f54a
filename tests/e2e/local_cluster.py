"""A real multi-node Ray cluster on this machine (a head and worker nodes started with the
venv's ``ray start``, each node in its own process group and temp dir), and the node-loss
scenario the multi-node test asserts on and ``bench/bench_multinode.py`` times.

Every node runs ``ray start --block`` in a new session, so killing a node is one
``killpg`` of its raylet, agents and workers; nothing here runs ``ray stop`` (it would stop
every Ray on the machine). The cluster takes a fresh token (``RAY_AUTH_TOKEN``), so no other
Ray on the machine can join it. Ray gives multi-node clusters the machine's address even for
``--node-ip-address=127.0.0.1`` (``services.resolve_ip_for_localhost``); the token and the
free ports keep the cluster private. Every wait is bounded.

This module does not assert anything; the test does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.helpers import REPO, cli_env, descendants, kill_pids, train_command, wait_gone

RAY = str(Path(sys.executable).with_name("ray"))
#: node death is noticed after 5 missed health checks 1 s apart (Ray's default: 3 s apart);
#: each check may take 5 s, so a node slowed by a loaded machine is not declared dead
FAST_HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "5000",
               "RAY_health_check_failure_threshold": "5"}


def free_port() -> int:
    """A TCP port free on this machine a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One ``ray start --block`` process (its own session: pgid == pid)."""

    name: str
    proc: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the node's whole process group (raylet, agents, its workers)."""
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        kill_pids(pids)
        self.proc.wait(timeout=30)


@dataclass
class LocalCluster:
    """A head and worker nodes; ``env`` is what a driver needs to join (the token)."""

    port: int
    env: dict[str, str]
    base: Path
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of the head's GCS."""
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> Node:
        temp = self.base / name
        log = self.base / f"{name}.log"
        cmd = [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={temp}",
               "--node-ip-address=127.0.0.1", "--min-worker-port=0", "--max-worker-port=0",
               f"--dashboard-agent-listen-port={free_port()}", *args]
        with log.open("a") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        node = Node(name, proc, log)
        self.nodes[name] = node
        return node

    def start_head(self, *, num_cpus: int, labels: dict[str, str],
                   resources: dict[str, float]) -> None:
        """The head node (GCS on ``self.port``, no dashboard)."""
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--ray-client-server-port={free_port()}",
                             f"--num-cpus={num_cpus}", *_node_args(labels, resources)])

    def start_worker(self, name: str, *, num_cpus: int, labels: dict[str, str],
                     resources: dict[str, float] | None = None) -> None:
        """A worker node joining the head."""
        self._start(name, [f"--address={self.address}", f"--num-cpus={num_cpus}",
                           *_node_args(labels, resources or {})])

    def wait_nodes(self, count: int, timeout: float = 120) -> list[dict[str, Any]]:
        """Block (bounded) until ``count`` nodes are alive; returns them (id, labels)."""
        script = (
            "import json, sys, time, ray\n"
            f"ray.init(address={self.address!r}, log_to_driver=False, logging_level='ERROR')\n"
            f"deadline = time.monotonic() + {timeout}\n"
            "while True:\n"
            "    alive = [n for n in ray.nodes() if n['Alive']]\n"
            f"    if len(alive) >= {count} or time.monotonic() > deadline: break\n"
            "    time.sleep(0.5)\n"
            "print(json.dumps([{'id': n['NodeID'], 'labels': n.get('Labels', {})}"
            " for n in alive]))\n")
        out = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True,
                             text=True, timeout=timeout + 60, cwd=REPO)
        if out.returncode != 0:
            raise RuntimeError(f"cluster probe failed: {out.stderr[-2000:]}")
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
        if len(nodes) < count:
            raise RuntimeError(f"only {len(nodes)}/{count} Ray nodes joined in {timeout} s; "
                               f"logs in {self.base}")
        return nodes

    def close(self) -> None:
        """Kill every node this cluster started (by process group) and remove its files."""
        for node in self.nodes.values():
            if node.proc.poll() is None:
                node.kill()
        left = wait_gone([p for node in self.nodes.values()
                          for p in [node.proc.pid, *descendants(node.proc.pid)]], 10)
        kill_pids(left)
        shutil.rmtree(self.base, ignore_errors=True)


def _node_args(labels: dict[str, str], resources: dict[str, float]) -> list[str]:
    args = []
    if labels:
        args.append("--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
    if resources:
        args.append("--resources=" + json.dumps(resources))
    return args


def new_cluster() -> LocalCluster:
    """An empty cluster description: a fresh token, a free GCS port, a short temp dir (Ray's
    socket paths must stay under ~100 characters)."""
    env = cli_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex, **FAST_HEALTH)
    env.pop("RAY_ADDRESS", None)
    return LocalCluster(free_port(), env, Path(tempfile.mkdtemp(prefix="rlmn")))


#: placement used by the scenario: reward on the head (a hard resource only the head has),
#: rollout and learner preferring their own node (soft: they move when that node is lost)
PLACEMENT = {"rollout": {"prefer_labels": {"rlsys-role": "rollout"}},
             "reward": {"resources": {"reward_slot": 1}},
             "learner": {"prefer_labels": {"rlsys-role": "learner"}}}


def start_role_cluster() -> LocalCluster:
    """Head (reward, 4 CPUs: room for every role once the others are lost), ``node_a``
    (rollout) and ``node_b`` (learner), each with 2 CPUs; returns once all three are up."""
    cluster = new_cluster()
    try:
        cluster.start_head(num_cpus=4, labels={"rlsys-role": "reward"},
                           resources={"reward_slot": 4})
        cluster.wait_nodes(1)
        cluster.start_worker("node_a", num_cpus=2, labels={"rlsys-role": "rollout"})
        cluster.start_worker("node_b", num_cpus=2, labels={"rlsys-role": "learner"})
        cluster.wait_nodes(3)
    except BaseException:
        cluster.close()
        raise
    return cluster


def scenario_recipe(cluster: LocalCluster, path: Path, *, steps: int) -> Path:
    """``configs/grpo_tiny.yaml`` joined to ``cluster`` with ``PLACEMENT``, a checkpoint every
    step, ``max_restarts: 3`` and no eval/plots (the scenario is about the stage)."""
    recipe = yaml.safe_load((REPO / "configs" / "grpo_tiny.yaml").read_text())
    recipe["cluster"] = {"address": cluster.address, "placement": PLACEMENT,
                         "max_restarts": 3, "timeout_s": 300}
    recipe["checkpoint"] = {"every_n_steps": 1, "keep_last": 2}
    recipe["logging"] = {"progress": False, "plot": False, "trackers": []}
    recipe["learner"].update(num_ranks=1, num_cpus_per_rank=1)
    recipe["rollout"].update(num_workers=1, num_cpus_per_worker=1)
    stage = recipe["stages"][0]
    stage.update(steps=steps, eval_after=False)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def placements(output: str) -> list[dict[str, Any]]:
    """The ``[placement] NAME: pid P on node ID labels {...}`` lines of a run, in order."""
    import ast
    import re

    found = []
    for line in output.splitlines():
        m = re.match(r"\[placement\] (\S+): pid (\d+) on node (\w+) labels (\{.*\})$", line)
        if m:
            found.append({"name": m.group(1), "pid": int(m.group(2)), "node": m.group(3),
                          "labels": ast.literal_eval(m.group(4))})
    return found


@dataclass
class KillEvent:
    """One kill during the run and how long until the run made progress again."""

    what: str
    at_step: int
    seconds_to_progress: float | None = None


def _metric_lines(run_dir: Path) -> list[str]:
    path = run_dir / "metrics.jsonl"
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def run_node_loss(cluster: LocalCluster, work: Path, *, steps: int = 7,
                  timeout: float = 900) -> dict[str, Any]:
    """Run ``rlsys train`` on ``cluster`` and, one after another once the run has made
    progress since the previous kill: kill ``node_a`` (rollout), kill ``node_b`` (learner),
    ``kill -9`` the policy rank wherever it then runs. Returns the exit code, output, run dir
    and the ``KillEvent``s (progress = a ``metrics.jsonl`` row not in the file at the kill)."""
    run_dir = work / "run"
    recipe = scenario_recipe(cluster, work / "recipe.yaml", steps=steps)
    log = work / "train.log"
    plan = ["node_a", "node_b", "rank"]
    events: list[KillEvent] = []
    with log.open("w") as out:
        proc = subprocess.Popen(train_command(str(recipe), run_dir), cwd=REPO, env=cluster.env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        killed_at = 0.0
        while proc.poll() is None and time.monotonic() < deadline:
            lines = _metric_lines(run_dir)
            fresh = [ln for ln in lines if ln not in seen]
            if events and events[-1].seconds_to_progress is None and fresh:
                events[-1].seconds_to_progress = time.monotonic() - killed_at
            if plan and lines and (not events or events[-1].seconds_to_progress is not None):
                step = json.loads(lines[-1])["step"]
                if step < steps - 1:  # leave room for progress after the kill
                    events.append(KillEvent(plan[0], step))
                    _kill(cluster, plan.pop(0), log)
                    killed_at = time.monotonic()
                    lines = _metric_lines(run_dir)
            seen = set(lines)
            time.sleep(0.25)
        if proc.poll() is None:
            raise TimeoutError(f"rlsys train did not finish within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return {"returncode": proc.returncode, "output": log.read_text(), "run_dir": run_dir,
            "events": events}


def _kill(cluster: LocalCluster, what: str, log: Path) -> None:
    if what in cluster.nodes:
        cluster.nodes[what].kill()
        return
    pid = [p for p in placements(log.read_text()) if p["name"] == "policy-0"][-1]["pid"]
    ours = {q for node in cluster.nodes.values() for q in descendants(node.proc.pid)}
    if pid not in ours:  # only ever a process of this cluster
        raise RuntimeError(f"policy rank pid {pid} is not a process of this test's cluster")
    os.kill(pid, signal.SIGKILL)
