"""End to end: ``rlsys train`` submitted with ``ray job submit`` to a local Ray head.

The same commands by hand (from the repository root, with the venv's ``ray`` so the head and the
job driver run the venv's Python; ``.gitignore`` already keeps ``.venv`` and ``runs`` out of the
upload, the ``excludes`` make it explicit)::

    export PATH="$PWD/.venv/bin:$PATH"
    export RAY_AUTH_MODE=token   # Ray 2.60: token auth (~/.ray/auth_token; `ray get-auth-token
                                 # --generate` makes one); the job CLI needs the mode set
    ray start --head --port=6379 --dashboard-port=8265 --dashboard-host=127.0.0.1 \\
        --node-ip-address=127.0.0.1 --num-cpus=4 --include-dashboard=true
    ray job submit --address http://127.0.0.1:8265 --working-dir . \\
        --runtime-env-json '{"excludes": [".git", ".venv", "runs", "bench/.venv-*"]}' \\
        --submission-id grpo-tiny-1 --no-wait -- \\
        python -m rlsys.cli train configs/grpo_tiny.yaml --set stages.grpo.steps=1 \\
        --run-dir /tmp/rlsys-job/run
    ray job status --address http://127.0.0.1:8265 grpo-tiny-1    # until it says "succeeded"
    ray job logs --address http://127.0.0.1:8265 grpo-tiny-1      # shows "[ray] joined cluster"
    ray stop

Here the head gets free ports and a private ``--temp-dir``. ``ray stop`` cannot be scoped to one
head (it stops every Ray process on the machine, including other tests' clusters), so the test
stops its head by killing the process group of ``ray start``, every process whose command line
names the private temp dir, and their child processes (Ray workers). The run dir must be an
absolute path: the driver runs inside Ray's copy of the working dir.
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
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    REPO,
    RL_STEP_KEYS,
    cli_env,
    descendants,
    kill_pids,
    non_finite,
    pids_in_group,
    pids_mentioning,
    stage_rows,
    wait_gone,
)

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
EXCLUDES = [".git", ".venv", "runs", "bench/.venv-*", ".hypothesis", ".schemathesis",
            ".pytest_cache", ".ruff_cache", "*.gguf", "*.safetensors"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalHead:
    """A ``ray start --head`` on free ports with a private temp dir, stopped precisely."""

    def __init__(self) -> None:
        # Ray puts unix sockets under the temp dir: keep it short (108-byte socket path limit)
        self.temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
        ports = free_ports(9)
        self.dashboard_port = ports[1]
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        # token auth, both ends: the head enables it by itself when ~/.ray/auth_token exists,
        # but the job CLI only sends the token when RAY_AUTH_MODE=token says so
        self.env = cli_env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                           RAY_AUTH_MODE="token")
        self.cmd = [
            RAY, "start", "--head", f"--port={ports[0]}", f"--dashboard-port={ports[1]}",
            "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", "--num-cpus=4",
            "--include-dashboard=true", f"--temp-dir={self.temp_dir}",
            f"--ray-client-server-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
            f"--dashboard-agent-grpc-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
            f"--metrics-export-port={ports[6]}", f"--node-manager-port={ports[7]}",
            f"--object-manager-port={ports[8]}", "--disable-usage-stats"]
        self.pgid: int | None = None

    def start(self) -> None:
        """Start the head; the daemons stay in the new session of ``ray start``."""
        proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.pgid = proc.pid
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``ray ARGS`` against this head (``--address`` is added after the subcommand)."""
        cmd = [RAY, *args[:2], "--address", self.address, *args[2:]]
        return subprocess.run(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)

    def stop(self, *extra_markers: str) -> list[int]:
        """Kill the head's processes (and any naming ``extra_markers``); returns survivors."""
        pids = pids_mentioning(self.temp_dir)
        for marker in extra_markers:
            pids += pids_mentioning(marker)
        if self.pgid is not None:
            pids += pids_in_group(self.pgid)
        # workers and actors (children of the raylet) may not name the temp dir any more
        pids += [child for pid in list(pids) for child in descendants(pid)]
        pids = sorted(set(pids) - {os.getpid()})
        kill_pids(pids, signal.SIGTERM)
        alive = wait_gone(pids, 15)
        kill_pids(alive, signal.SIGKILL)
        alive = wait_gone(alive, 10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return alive


@pytest.fixture
def ray_head():
    """A private local Ray head for one test."""
    head = LocalHead()
    try:
        head.start()
        yield head
    finally:
        head.stop()


def wait_for_job(head: LocalHead, job_id: str, timeout: float) -> str:
    """Poll ``ray job status`` until the job reaches a terminal state; returns that state."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = head.ray("job", "status", job_id).stdout
        # Ray 2.60 ends with "Job 'ID' succeeded" / "Job 'ID' failed" / "Job 'ID' was stopped"
        for state in ("succeeded", "failed", "stopped"):
            if f"job '{job_id}' {state}" in status.lower().replace("was stopped", "stopped"):
                return state.upper()
        time.sleep(5)
    return f"TIMEOUT after {timeout}s: {status[-2000:]}"


def test_ray_job_submit_trains_on_the_cluster(ray_head, tmp_path):
    run_dir = tmp_path / "run"
    job_id = f"rlsys-e2e-{uuid.uuid4().hex[:8]}"
    submitted = ray_head.ray(
        "job", "submit", "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
        "--submission-id", job_id, "--no-wait", "--",
        "python", "-m", "rlsys.cli", "train", "configs/grpo_tiny.yaml",
        "--set", "stages.grpo.steps=1", "--run-dir", str(run_dir), timeout=300)
    assert submitted.returncode == 0, submitted.stdout
    try:
        state = wait_for_job(ray_head, job_id, timeout=400)
        logs = ray_head.ray("job", "logs", job_id).stdout
    finally:
        ray_head.ray("job", "stop", job_id)
        ray_head.stop(str(run_dir))
    assert state == "SUCCEEDED", logs[-4000:]
    assert "[ray] joined cluster" in logs, logs[-4000:]
    rows = stage_rows(run_dir, "grpo")
    assert [r["step"] for r in rows] == [1], logs[-4000:]
    assert non_finite(rows[0], RL_STEP_KEYS) == {}, rows[0]
    final = run_dir / "stages" / "grpo" / "final"
    assert (final / "config.json").is_file() and any(final.glob("*.safetensors"))
    state_file = json.loads((run_dir / "run_state.json").read_text())
    assert state_file["stages"]["grpo"]["done"] is True
