"""Where output goes in a quiet run, and the watchdog that tears a local Ray down with its driver.

Real processes, no Ray: ``route_worker_output`` (Ray's worker setup hook) runs in a child
Python whose output is captured; ``redirect_stderr`` in this process; the watchdog watches a
stand-in "driver" process whose "session" is a few sleeping processes that name a session dir
on their command line (as Ray's GCS and raylet do), one of them with a child of its own.
The full runs (``rlsys train`` quiet and after ``kill -9``) are in
``tests/e2e/test_quiet_run.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rlsys import worker_logs
from tests.e2e.helpers import REPO, wait_gone

CHILD = textwrap.dedent("""
    import os, subprocess, sys
    from rlsys.worker_logs import route_worker_output
    print("before the hook")
    sys.stdout.flush()
    route_worker_output()
    print("python stdout")
    print("python stderr", file=sys.stderr)
    os.write(2, b"fd 2 write\\n")
    subprocess.run(["echo", "subprocess output"], check=True)
""")


def _run_child(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def test_named_worker_output_goes_to_its_file(tmp_path):
    """Everything a named worker writes after the hook -- Python, fd 2, a subprocess -- lands in
    LOG_DIR/NAME.log and not on the captured streams."""
    proc = _run_child({worker_logs.LOG_DIR_VAR: str(tmp_path / "logs"),
                       worker_logs.LOG_NAME_VAR: "rollout-0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "before the hook\n" and proc.stderr == ""
    text = (tmp_path / "logs" / "rollout-0.log").read_text()
    for line in ("python stdout", "python stderr", "fd 2 write", "subprocess output"):
        assert line in text
    assert "before the hook" not in text


def test_unnamed_or_unrouted_workers_keep_their_streams(tmp_path):
    """Without a name (Ray's pooled task workers) or a log dir (a verbose run), nothing moves."""
    for env in ({worker_logs.LOG_DIR_VAR: str(tmp_path)}, {worker_logs.LOG_NAME_VAR: "x-0"}):
        proc = _run_child({worker_logs.LOG_DIR_VAR: "", worker_logs.LOG_NAME_VAR: "", **env})
        assert proc.returncode == 0, proc.stderr
        assert "python stdout" in proc.stdout and "fd 2 write" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_redirect_stderr_restores_the_terminal(tmp_path, capfd):
    """Inside the block fd 2 goes to the file, stdout stays; afterwards fd 2 is back."""
    log = tmp_path / "logs" / "driver.log"
    with worker_logs.redirect_stderr(log):
        os.write(2, b"library warning\n")
        print("run line", flush=True)
    os.write(2, b"after\n")
    out, err = capfd.readouterr()
    assert log.read_text() == "library warning\n"
    assert out == "run line\n" and err == "after\n"


def test_job_log_dir_reads_the_runtime_env():
    assert worker_logs.job_log_dir({"env_vars": {worker_logs.LOG_DIR_VAR: "/r/logs"}}) \
        == "/r/logs"
    assert worker_logs.job_log_dir({}) is None and worker_logs.job_log_dir(None) is None


FAKE_DRIVER = textwrap.dedent("""
    import os, subprocess, sys, time
    from rlsys.controller.watchdog import start_watchdog
    session = os.environ["FAKE_SESSION"]  # a Ray driver does not name it on its command line
    start_watchdog(session)
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    # like the GCS / raylet: the session dir on the command line; one has a child (a worker)
    subprocess.Popen(sleeper + ["--session-dir=" + session])
    subprocess.Popen(["sh", "-c", "sleep 600 & wait", "--session-dir=" + session])
    print("ready", flush=True)
    time.sleep(600)
""")


def _session_pids(session: str) -> list[int]:
    from rlsys.controller.watchdog import session_processes

    return sorted(session_processes(session))


def test_watchdog_stops_the_session_after_kill_9_of_the_driver(tmp_path):
    """After SIGKILL of the driver, every process of its session (and their children) is
    gone within the grace period; an unrelated process started by the same driver's parent
    is left alone."""
    session = str(tmp_path / "session_test")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    driver = subprocess.Popen([sys.executable, "-c", FAKE_DRIVER], cwd=REPO,
                              env={**os.environ, "FAKE_SESSION": session},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while len(pids := _session_pids(session)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(pids) == 3, pids  # the python sleeper, sh, and sh's child (no marker)
        time.sleep(1.5)  # the watchdog has listed them (it polls every second)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        assert wait_gone(pids, timeout=20) == []
        assert bystander.poll() is None
    finally:
        for proc in (bystander, driver):
            proc.kill()
            proc.wait()
        for pid in _session_pids(session):
            os.kill(pid, signal.SIGKILL)


def test_stopped_watchdog_leaves_the_session_alone(tmp_path):
    """A normal shutdown (``stop_watchdog``) signals nothing, even once the driver is gone."""
    from rlsys.controller.watchdog import start_watchdog, stop_watchdog

    session = str(tmp_path / "session_kept")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                                "--session-dir=" + session])
    try:
        watchdog = start_watchdog(session, str(tmp_path / "watchdog.log"))
        time.sleep(1.5)
        stop_watchdog(watchdog)
        assert watchdog.returncode == 0
        time.sleep(0.5)
        assert sleeper.poll() is None
        assert Path(tmp_path / "watchdog.log").read_text() == ""
    finally:
        sleeper.kill()
        sleeper.wait()
