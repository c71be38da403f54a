"""Helpers shared by the end-to-end tests: run the real ``rlsys`` CLI in a subprocess, read
``metrics.jsonl``, compare model weights, and find or end the processes of one Ray session.

Nothing here starts Ray by itself; process clean-up only ever touches pids that the caller
started or that belong to a Ray session directory the caller names.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: per-step keys every RL metrics row must carry as finite numbers
RL_STEP_KEYS = ("loss", "reward/mean", "time/generate", "time/train", "time/sync")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: a local Ray (no inherited ``RAY_ADDRESS``), one
    OpenMP thread per process (the test machines have two shared cores)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1", **extra})
    return env


def train_command(recipe: str, run_dir: Path, *overrides: str) -> list[str]:
    """``python -m rlsys.cli train RECIPE --run-dir RUN_DIR [--set K=V ...]``."""
    cmd = [sys.executable, "-m", "rlsys.cli", "train", recipe, "--run-dir", str(run_dir)]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def run_train(recipe: str, run_dir: Path, *overrides: str,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``rlsys train`` to completion (stdout and stderr merged into ``.stdout``); the output
    is also saved to ``<run_dir>.log`` for post-mortems.

    The run gets its own process group; past ``timeout`` the whole group (driver and the local
    Ray it started) is SIGKILLed and the result has return code -9 and a ``[timeout]`` line.
    """
    proc = subprocess.Popen(train_command(recipe, run_dir, *overrides), cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[timeout] killed after {timeout} s\n"
    Path(f"{run_dir}.log").write_text(out)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def stage_rows(run_dir: Path, stage: str) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` rows of ``stage``, in file order."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("stage") == stage]


def non_finite(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The entries of ``row`` among ``keys`` that are missing or not finite numbers."""
    bad = {}
    for key in keys:
        value = row.get(key)
        if not isinstance(value, int | float) or not math.isfinite(value):
            bad[key] = value
    return bad


def max_weight_change(before_dir: str | Path, after_dir: str | Path) -> float:
    """Largest absolute parameter difference between two HF model directories (both loaded
    with ``AutoModelForCausalLM.from_pretrained``, which is itself part of the check)."""
    import torch
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(str(before_dir)).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(after_dir)).state_dict()
    if before.keys() != after.keys():
        raise AssertionError(f"parameter names differ: {sorted(before.keys() ^ after.keys())}")
    return max(float((before[k].float() - after[k].float()).abs().max()) for k in before
               if torch.is_floating_point(before[k]))


def pids_in_group(pgid: int) -> list[int]:
    """Live pids whose process group is ``pgid`` (from ``/proc``)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # the fields after the ")" that ends the command name: state ppid pgrp ...
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                out.append(int(entry.name))
    return out


def descendants(root: int) -> list[int]:
    """Live pids below ``root`` in the process tree (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def pids_mentioning(text: str) -> list[int]:
    """Live, non-zombie pids whose command line contains ``text`` (e.g. a Ray session dir)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and text in cmdline(int(entry.name)):
                out.append(int(entry.name))
    return out


def ray_session_dir(pids: list[int]) -> str | None:
    """The ``session_...`` directory named on the command line of a raylet among ``pids``."""
    for pid in pids:
        for arg in cmdline(pid).split():
            if "session_dir=" in arg:
                return arg.split("session_dir=", 1)[1]
    return None


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each of ``pids`` that still exists."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` s for ``pids`` to exit; returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and _not_zombie(p)]
        time.sleep(0.2)
    return alive


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
