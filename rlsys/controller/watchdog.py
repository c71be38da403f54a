"""Tear a local Ray down with its driver, even when the driver is killed with ``kill -9``.

Ray's head processes (GCS, raylet, dashboard, monitors) mostly follow a dead driver, but its
dashboard and runtime-env agents wait about a minute on the dead GCS before they exit, and
actors can outlive it for seconds. ``start_watchdog`` starts a small process (its own session,
so Ctrl-C and a kill of the driver's process group leave it running) that keeps a list of the
Ray session's processes -- those whose command line names the session directory, and their
descendants -- while the driver lives. When the driver is gone (the watchdog's parent changed),
it sends them SIGTERM and, after a grace period, SIGKILL. A pid is only signalled while its
start time is the one recorded, so a reused pid is never hit. ``stop_watchdog`` ends it after a
normal shutdown.

Linux only (``/proc``); elsewhere ``start_watchdog`` returns None. It does not watch clusters
it did not start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SESSION_VAR = "RLSYS_WATCH_SESSION_DIR"
POLL_S = 1.0
GRACE_S = 3.0


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live, non-zombie ``pid``; None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else (int(fields[1]), fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def session_processes(session_dir: str) -> dict[int, str]:
    """``{pid: start time}`` of the processes that name ``session_dir`` on their command line
    and of all their descendants (the raylet's workers and agents)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = info
    found = {pid for pid in table if pid != os.getpid() and session_dir in _cmdline(pid)}
    grew = True
    while grew:  # close over children
        new = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= new
        grew = bool(new)
    found.discard(os.getpid())
    return {pid: table[pid][1] for pid in found}


def _signal_all(tracked: dict[int, str], sig: int) -> list[int]:
    """Send ``sig`` to each tracked pid still running with its recorded start time."""
    hit = []
    for pid, started in tracked.items():
        info = _stat(pid)
        if info is not None and info[1] == started:
            try:
                os.kill(pid, sig)
                hit.append(pid)
            except ProcessLookupError:
                pass
    return hit


def watch(driver_pid: int, session_dir: str, *, log=None) -> int:
    """Track the session while ``driver_pid`` (our parent) lives, then stop what is left;
    returns how many processes were signalled."""
    tracked: dict[int, str] = {}
    while os.getppid() == driver_pid:
        tracked.update(session_processes(session_dir))
        time.sleep(POLL_S)
    tracked.update(session_processes(session_dir))
    hit = _signal_all(tracked, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(
            (info := _stat(p)) is not None and info[1] == tracked[p] for p in hit):
        time.sleep(0.1)
    killed = _signal_all(tracked, signal.SIGKILL)
    if log is not None:
        print(f"driver {driver_pid} gone: SIGTERM to {len(hit)}, SIGKILL to {len(killed)} "
              f"process(es) of {session_dir}", file=log, flush=True)
    return len(hit)


def start_watchdog(session_dir: str, log_path: str | None = None) -> subprocess.Popen | None:
    """Start the watchdog of this driver's local Ray session (None where there is no /proc)."""
    if not Path("/proc/self/stat").exists():
        return None
    out = open(log_path, "a") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        # The session dir travels in the environment, so the watchdog is not itself a process
        # "of the session" for tools that look for the session dir on command lines.
        return subprocess.Popen(
            [sys.executable, "-m", "rlsys.controller.watchdog", str(os.getpid())],
            env={**os.environ, SESSION_VAR: session_dir}, stdin=subprocess.DEVNULL, stdout=out,
            stderr=out, start_new_session=True, close_fds=True)
    finally:
        if not isinstance(out, int):  # an opened log file, not subprocess.DEVNULL
            out.close()


def stop_watchdog(proc: subprocess.Popen | None) -> None:
    """End the watchdog after a normal shutdown (it then stops nothing)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    """``python -m rlsys.controller.watchdog DRIVER_PID`` (session dir in ``SESSION_VAR``)."""
    driver_pid = (argv or sys.argv[1:])[0]
    session_dir = os.environ[SESSION_VAR]
    # SIGTERM from stop_watchdog means a normal shutdown: exit without signalling anything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    watch(int(driver_pid), session_dir, log=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
