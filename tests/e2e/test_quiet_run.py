"""End to end: what ``rlsys train`` prints, where worker output goes, and what is left after
``kill -9`` of the driver (issues #17.3 and #16.11). Real CLI subprocesses on ``grpo_tiny``.

* Quiet by default: a header, the stage's start line, its progress bar, its summary line and
  the final lines -- no Ray worker lines (``(Learner pid=...)``), no weight-loading bars, no
  DeepSpeed/transformers/Ray warnings; each worker's output is in ``RUN_DIR/logs/NAME.log``.
* ``--verbose`` shows worker output on the terminal as Ray does (so the chatter checks above
  can fail).
* A worker that fails is reported on the terminal with its name, phase and log file.
* The local Ray listens on loopback only, and after ``kill -9`` of the driver no process of its
  session is left (the watchdog of ``rlsys.controller.watchdog``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    REPO,
    cli_env,
    cmdline,
    descendants,
    kill_pids,
    pids_mentioning,
    ray_session_dir,
    run_train,
    train_command,
    wait_gone,
)

pytestmark = pytest.mark.slow

RECIPE = "configs/grpo_tiny.yaml"
WORKER_LINE = re.compile(r"\(\w+(\.\w+)? pid=\d+")
CHATTER = ("Loading weights", "[WARNING]", "Warning:", "UserWarning", "Token authentication",
           "Setting accelerator", "generation flags")


BAR = re.compile(r"^[\w-]+:\s+\d+%\|")


def _lines(output: str) -> list[str]:
    """The lines a terminal keeps: a progress bar redraws itself with carriage returns (which
    the pipe shows as new lines), so consecutive refreshes of one bar count once."""
    kept: list[str] = []
    for line in output.splitlines():
        if line.strip() and not (BAR.match(line) and kept and BAR.match(kept[-1])):
            kept.append(line)
    return kept


def test_quiet_terminal_and_per_worker_logs(tmp_path):
    run = tmp_path / "run"
    proc = run_train(RECIPE, run, "stages.grpo.steps=2")
    assert proc.returncode == 0, proc.stdout[-4000:]
    lines = _lines(proc.stdout)
    # header (4) + start + bar + summary + eval + done + held-out accuracy = 10
    assert len(lines) <= 12, proc.stdout
    assert lines[0].startswith("rlsys train: recipe 'grpo_tiny'"), lines[0]
    assert any(line.startswith("[grpo] done in") and "step 2/2" in line for line in lines)
    assert lines[-1].startswith("held-out accuracy:")
    assert not [line for line in lines if WORKER_LINE.search(line)], proc.stdout
    assert not [c for c in CHATTER if c in proc.stdout], proc.stdout
    logs = run / "logs"
    for name, actor in (("policy-0", "Learner"), ("rollout-0", "RolloutWorker"),
                        ("reward-0", "RewardWorker")):
        # Ray writes the actor's name into its own stdout: the file is that worker's output
        assert f":actor_name:{actor}" in (logs / f"{name}.log").read_text(), name
    assert (logs / "driver.log").exists()


def test_verbose_shows_worker_output(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(train_command(RECIPE, run, "stages.grpo.steps=1") + ["--verbose"],
                          cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert [line for line in _lines(proc.stdout) if WORKER_LINE.search(line)], proc.stdout
    assert not (run / "logs" / "policy-0.log").exists()


def test_worker_error_names_worker_phase_and_log(tmp_path):
    run = tmp_path / "run"
    proc = run_train(RECIPE, run, "rollout.engine_kwargs.no_such_option=1", timeout=400)
    assert proc.returncode == 3, proc.stdout[-4000:]  # WorkerError.EXIT_STATUS
    assert "Traceback" not in proc.stdout, proc.stdout[-4000:]
    log = run / "logs" / "rollout-0.log"
    error = [line for line in proc.stdout.splitlines() if "failed during 'start'" in line]
    assert error and error[-1].startswith("rlsys train: error: rollout worker 0 (pid "), \
        proc.stdout[-4000:]
    assert "no_such_option" in error[-1] and error[-1].endswith(f"; its log: {log}")
    assert "no_such_option" in log.read_text()  # the worker's traceback is in its file


def _wildcard_listeners() -> dict[int, list[str]]:
    """``{pid: [addr:port, ...]}`` of TCP sockets listening on every interface (0.0.0.0, ::)."""
    wildcard = {"00000000", "00000000000000000000000000000000"}
    inodes = {}
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            addr, port = fields[1].split(":")
            if fields[3] == "0A" and addr in wildcard:  # 0A = LISTEN
                inodes[fields[9]] = f"{'::' if len(addr) > 8 else '0.0.0.0'}:{int(port, 16)}"
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    found.setdefault(int(entry.name), []).append(inodes[target[8:-1]])
        except OSError:
            continue
    return found


def test_local_ray_is_loopback_only_and_dies_with_a_killed_driver(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(train_command(RECIPE, run, "stages.grpo.steps=50"), cwd=REPO,
                            env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (run / "metrics.jsonl").exists():
            assert proc.poll() is None, "the run ended before its first step"
            time.sleep(1)
        assert (run / "metrics.jsonl").exists(), "no training step within 300 s"
        session = ray_session_dir(descendants(proc.pid))
        assert session, "no raylet among the driver's descendants"
        pids = sorted(set(descendants(proc.pid)) | set(pids_mentioning(session)))
        names = {pid: cmdline(pid).split(" ")[0] for pid in pids}
        assert any("raylet" in n for n in names.values())
        assert any(n.startswith("ray::Learner") for n in names.values())
        listening = {pid: ports for pid, ports in _wildcard_listeners().items() if pid in pids}
        # The only allowed one: torch.distributed's rendezvous store in the rank-0 learner
        # (c10d's TCPStore always binds every interface); Ray's own servers must not.
        ray_side = {names[p]: ports for p, ports in listening.items()
                    if not names[p].startswith("ray::Learner")}
        assert ray_side == {}, ray_side
        assert all(len(ports) <= 1 for ports in listening.values()), listening
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        left = wait_gone(sorted(set(pids) | set(pids_mentioning(session))), timeout=30)
        assert left == [], [(p, cmdline(p)[:80]) for p in left]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        kill_pids(pids)
