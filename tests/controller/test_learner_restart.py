"""``cluster.max_restarts`` on one machine: ``kill -9`` of one of two learner ranks mid-stage
(SFT, a local Ray) makes the runner stop the group, restart the stage from its last checkpoint
and finish; ``metrics.jsonl`` has every step exactly once and ``run_state.json`` records the
restart. The multi-node variant (lost nodes, an RL stage) is ``tests/e2e/test_multinode.py``;
without restarts left the run ends with exit 3 (``test_dead_rank.py``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.e2e.helpers import REPO, cli_env, cmdline, descendants, stage_rows, train_command

pytestmark = pytest.mark.slow

STEPS = 8


def test_killed_rank_restarts_the_sft_stage_from_its_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        train_command("configs/sft_tiny.yaml", run_dir, f"stages.sft.steps={STEPS}",
                      "checkpoint.every_n_steps=2", "cluster.max_restarts=1",
                      "logging.progress=false", "logging.plot=false"),
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    killed = None
    try:
        deadline = time.monotonic() + 600
        metrics = run_dir / "metrics.jsonl"
        while time.monotonic() < deadline and proc.poll() is None and killed is None:
            rows = metrics.read_text().splitlines() if metrics.exists() else []
            if len(rows) >= 3:  # past the step-2 checkpoint, before the end
                ranks = [p for p in descendants(proc.pid) if cmdline(p).startswith("ray::Learner")]
                if ranks:
                    killed = ranks[-1]
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert killed is not None, f"no learner rank found to kill; exit {proc.returncode}\n{out}"
    assert proc.returncode == 0, out[-4000:]
    assert out.count("restart 1/1 from the last checkpoint") == 1, out[-4000:]
    assert f"(pid {killed}) died in" in out, out[-4000:]
    resumed = re.findall(r"^\[sft\] resumed from \S+ at step (\d+)$", out, re.MULTILINE)
    assert len(resumed) == 1 and int(resumed[0]) in range(2, STEPS, 2), out[-4000:]
    assert [r["step"] for r in stage_rows(run_dir, "sft")] == list(range(1, STEPS + 1))
    state = json.loads((run_dir / "run_state.json").read_text())
    assert state["stages"]["sft"]["done"] and len(state["restarts"]) == 1, state
    assert state["restarts"][0]["stage"] == "sft" and state["restarts"][0]["groups_stopped"] == 1
