"""End to end: fault tolerance of an RL run.

* Killing the whole driver (SIGKILL to its process group, local Ray included) after the step-2
  checkpoint and re-running the same command resumes at step 2 and finishes the stage.
* A rollout worker killed mid-run (its process SIGKILLed after the first step, while the run
  goes on in this process on the suite's Ray session, ``ray_cluster``) is restarted by the pool
  (``actors.launch``) and the run completes every step.
* Checkpoint bookkeeping a resume relies on: ``keep_last`` pruning, and the sampler position
  saved by an async run (which draws the next step's prompts before the save).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    REPO,
    RL_STEP_KEYS,
    cli_env,
    cmdline,
    descendants,
    kill_pids,
    non_finite,
    pids_mentioning,
    ray_session_dir,
    run_train,
    stage_rows,
    train_command,
    wait_gone,
)

pytestmark = pytest.mark.slow

RESUME_SETS = ("stages.grpo.steps=4", "checkpoint.every_n_steps=2",
               "stages.grpo.eval_after=false")


def step_checkpoint(run_dir: Path, step: int) -> Path:
    """Where the RL stage ``grpo`` saves the checkpoint taken after ``step`` (see
    ``learner.checkpoint.checkpoint_dir``; ``training_state/trainer_state.json`` is written
    last and marks it complete)."""
    return run_dir / "stages" / "grpo" / "ckpt" / "checkpoints" / f"step_{step:08d}"


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> bool:
    """Poll ``predicate`` every 0.2 s while ``proc`` runs; False on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def kill_run(proc: subprocess.Popen) -> tuple[str | None, list[int]]:
    """SIGKILL the driver's process group; returns the Ray session dir it used and the pids of
    that run still alive 30 s later, which are then killed by pid so nothing leaks.

    Ray's workers run in process groups of their own (and actors rewrite their command line to
    ``ray::Class``), so the run's processes are the driver's process tree taken just before the
    kill plus whatever names the session dir; they should exit once their raylet is gone.
    """
    tree = [proc.pid, *descendants(proc.pid)]
    session = ray_session_dir(tree)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    run_pids = set(tree) | set(pids_mentioning(session) if session else [])
    survivors = wait_gone(sorted(run_pids), 30)
    kill_pids(survivors)
    wait_gone(survivors, 10)
    return session, survivors


def test_killed_driver_resumes_from_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(train_command("configs/grpo_tiny.yaml", run_dir, *RESUME_SETS),
                            cwd=REPO, env=cli_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        ckpt = step_checkpoint(run_dir, 2)
        saved = wait_for(lambda: (ckpt / "training_state" / "trainer_state.json").is_file(),
                         300, proc)
    finally:
        session, survivors = kill_run(proc)
        log.close()
    first = (tmp_path / "first.log").read_text()
    assert saved, f"no step-2 checkpoint; exit {proc.returncode}\n{first[-4000:]}"
    assert session is not None, "found no raylet among the driver's child processes"
    assert survivors == [], f"Ray processes of {session} outlived the process group"
    raylets = [p for p in pids_mentioning(session) if "raylet" in Path(f"/proc/{p}/comm")
               .read_text(errors="replace")]
    assert raylets == []
    assert not (run_dir / "stages" / "grpo" / "final").exists(), "run finished before the kill"
    before = len(stage_rows(run_dir, "grpo"))

    proc2 = run_train("configs/grpo_tiny.yaml", run_dir, *RESUME_SETS, timeout=300)
    assert proc2.returncode == 0, proc2.stdout[-4000:]
    assert "resumed from" in proc2.stdout and "at step 2" in proc2.stdout, proc2.stdout[-4000:]
    assert before >= 2, "steps 1 and 2 were logged before the step-2 checkpoint"
    rows = stage_rows(run_dir, "grpo")
    # every step exactly once: the replayed step 3 (if logged before the kill) was dropped
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    all_rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text()
                .splitlines()]
    keys = [(r["stage"], r["step"]) for r in all_rows]
    assert len(keys) == len(set(keys)), keys
    for row in rows[2:]:
        assert non_finite(row, RL_STEP_KEYS) == {}, row
    events = list((run_dir / "tensorboard" / "grpo").glob("events.out.tfevents.*"))
    assert len(events) == 2  # the resumed writer appends a file that purges steps >= 3
    state = json.loads((run_dir / "run_state.json").read_text())
    assert state["stages"]["grpo"]["done"] is True


def rollout_worker_pids() -> list[int]:
    """Pids of the ``RolloutWorker`` actors of the Ray session this process started.

    Ray names an actor's process ``ray::RolloutWorker[.method]``; the actors are children of
    this process's raylet, so other Ray sessions on the machine are never touched. (The pool's
    actors are unnamed, and ``ray.util.state.list_actors`` needs the dashboard.)
    """
    return [pid for pid in descendants(os.getpid())
            if cmdline(pid).startswith("ray::RolloutWorker")]


class RolloutKiller(threading.Thread):
    """Waits for the first metrics row, SIGKILLs the run's rollout worker process, then
    watches for the replacement worker the pool starts. Workers alive before the run (other
    tests' pools on the shared session) are left alone."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.preexisting = set(rollout_worker_pids())
        self.killed: list[int] = []
        self.replacements: list[int] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            metrics = self.run_dir / "metrics.jsonl"
            while not self.stop.is_set() and not (metrics.exists() and metrics.read_text()):
                time.sleep(0.2)
            if self.stop.is_set():
                return
            for pid in set(rollout_worker_pids()) - self.preexisting:
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
            while not self.stop.is_set() and not self.replacements:
                self.replacements = [p for p in rollout_worker_pids()
                                     if p not in self.killed and p not in self.preexisting]
                time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_killed_rollout_worker_does_not_end_the_run(ray_cluster, tmp_path):
    from rlsys.config import load_recipe
    from rlsys.controller.runner import run_recipe

    recipe = load_recipe(str(REPO / "configs" / "grpo_tiny.yaml"),
                         ["stages.grpo.steps=3", "stages.grpo.eval_after=false",
                          "checkpoint.every_n_steps=0", "logging.progress=false"])
    run_dir = tmp_path / "run"
    killer = RolloutKiller(run_dir)
    killer.start()
    try:
        run_recipe(recipe, run_dir=str(run_dir))
    finally:
        killer.stop.set()
        killer.join(timeout=60)
    assert killer.error is None, repr(killer.error)
    assert len(killer.killed) == 1, killer.killed
    assert wait_gone(killer.killed, 5) == []
    assert killer.replacements, "no new RolloutWorker process after the kill"
    assert [r["step"] for r in stage_rows(run_dir, "grpo")] == [1, 2, 3]
    state = json.loads((run_dir / "run_state.json").read_text())
    assert state["stages"]["grpo"]["done"] is True


def test_keep_last_prunes_old_step_checkpoints(tmp_path):
    """``checkpoint.keep_last: 1`` with a checkpoint after every step keeps only the newest."""
    run_dir = tmp_path / "run"
    proc = run_train("configs/grpo_tiny.yaml", run_dir, "stages.grpo.steps=3",
                     "checkpoint.every_n_steps=1", "checkpoint.keep_last=1",
                     "stages.grpo.eval_after=false", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    kept = sorted(p.name for p in step_checkpoint(run_dir, 1).parent.iterdir())
    assert kept == ["step_00000002"], kept


def test_async_checkpoint_keeps_the_prefetched_prompts(tmp_path):
    """With ``async_rollout`` the prompts of step t+1 are drawn while step t trains; the
    step-t checkpoint must record the sampler position before that draw, or a resumed run
    skips step t+1's prompts (the README promises the same data order after a resume)."""
    run_dir = tmp_path / "run"
    proc = run_train("configs/grpo_async_tiny.yaml", run_dir, "stages.grpo.steps=3",
                     "checkpoint.every_n_steps=2", "stages.grpo.algo.dynamic_sampling=false",
                     timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    state = json.loads((step_checkpoint(run_dir, 2) / "training_state" / "trainer_state.json")
                       .read_text())
    prompts_per_step = 4  # configs/grpo_async_tiny.yaml rollout.prompts_per_step
    assert state["extra_state"]["sampler"]["drawn"] == 2 * prompts_per_step, state
