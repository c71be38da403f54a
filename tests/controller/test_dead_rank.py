"""A learner rank whose process dies (SIGKILL) is reported at once as one line naming the rank,
its pid, the method it was in and the rank's worker log file: by ``LearnerGroup`` as
``LearnerLostError``, and by ``rlsys train`` as one ``error:`` line with exit status 3 (not a
traceback, and not 2, which means bad input)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from learner.errors import LearnerLostError
from tests.e2e.helpers import REPO, cli_env, cmdline, descendants, train_command
from tests.learner.batches import random_rows, token_batch

pytestmark = pytest.mark.slow


def test_killed_rank_is_reported_with_its_log(ray_cluster, tiny_model_dir):
    from learner.launch import LearnerGroup

    group = LearnerGroup(2, model_path=tiny_model_dir, lr=1e-3, seed=0, timeout_s=300)
    try:
        for facts in group.workers:  # each rank's stdout/stderr files, found at start
            assert facts["logs"] and all(Path(log).is_file() for log in facts["logs"]), facts
        assert group.call("info")[1]["rank"] == 1
        victim = group.workers[1]
        os.kill(victim["pid"], signal.SIGKILL)
        rows = random_rows(4, 8, seed=1)
        with pytest.raises(LearnerLostError) as caught:
            group.train("train_sft", [token_batch(rows[i:i + 1]) for i in range(4)],
                        num_tokens=20, num_seqs=4)
    finally:
        group.shutdown()
    err = caught.value
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"learner rank 1 (pid {victim['pid']}) died in train_sft: ")
    assert message.endswith("its log: " + ", ".join(victim["logs"]))
    assert (err.ranks, err.method, err.logs) == ([1], "train_sft", victim["logs"])


def test_rlsys_train_reports_a_dead_rank_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        train_command("configs/sft_tiny.yaml", run_dir, "stages.sft.steps=200",
                      "checkpoint.every_n_steps=0", "logging.progress=false",
                      "logging.plot=false"),
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    killed = None
    try:
        deadline = time.monotonic() + 300
        metrics = run_dir / "metrics.jsonl"
        while time.monotonic() < deadline and proc.poll() is None and killed is None:
            if metrics.exists() and metrics.read_text():  # the ranks are training
                ranks = [p for p in descendants(proc.pid)
                         if cmdline(p).startswith("ray::Learner")]
                if ranks:
                    killed = ranks[-1]
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert killed is not None, f"no learner rank found to kill; exit {proc.returncode}\n{err}"
    assert proc.returncode == 3, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    errors = [line for line in err.splitlines() if line.startswith("rlsys train: error:")]
    assert len(errors) == 1, err[-4000:]
    found = re.fullmatch(r"rlsys train: error: learner rank (\d) \(pid (\d+)\) died in "
                         r"(train_sft|forward\w*|state_dict_for_sync): .+; its log: (.+)",
                         errors[0])
    assert found, errors[0]
    assert int(found.group(2)) == killed
    logs = found.group(4).split(", ")
    assert all(Path(log).is_file() for log in logs), logs
