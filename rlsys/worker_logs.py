"""Where worker and library output goes: one file per worker under ``RUN_DIR/logs``.

A quiet run (the default of ``rlsys train`` / ``rlsys eval``) keeps the terminal for the run's
own lines. The run context puts ``RLSYS_LOG_DIR`` and the Ray ``worker_process_setup_hook``
``rlsys.worker_logs.route_worker_output`` in the job's runtime env; each launch site gives its
actor a name (``RLSYS_LOG_NAME``, e.g. ``rollout-0``, ``policy-1``) through the actor's own
runtime env. When a worker process starts, the hook points its stdout and stderr (file
descriptors 1 and 2, so C extensions and subprocesses follow) at ``LOG_DIR/NAME.log`` before the
actor's class is even imported. The driver's stderr goes to ``driver.log`` the same way
(``redirect_stderr``).

Stdlib only; it does not start Ray and does not decide when a run is quiet (the run context
does).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_DIR_VAR = "RLSYS_LOG_DIR"
LOG_NAME_VAR = "RLSYS_LOG_NAME"
SETUP_HOOK = "rlsys.worker_logs.route_worker_output"
#: Worker environment of a quiet run: no download/loading bars in the log files (library
#: warnings are kept there).
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def log_file(log_dir: str | os.PathLike[str], name: str) -> Path:
    """``log_dir/NAME.log``: the file of the worker called ``name``."""
    return Path(log_dir) / f"{name}.log"


def actor_log_env(name: str) -> dict[str, str]:
    """Environment variables naming an actor's log file (for its ``runtime_env``)."""
    return {LOG_NAME_VAR: name}


def job_log_dir(runtime_env: dict | None) -> str | None:
    """The log dir of a quiet run, read from the job's runtime env (None: output not routed)."""
    return ((runtime_env or {}).get("env_vars") or {}).get(LOG_DIR_VAR)


def _point_fds_at(path: Path, fds: tuple[int, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for fd in fds:
            os.dup2(target, fd)
    finally:
        os.close(target)


def route_worker_output() -> None:
    """Ray's ``worker_process_setup_hook``: a named worker's stdout and stderr go to its file.

    Unnamed workers (Ray's pooled task workers) keep Ray's own log files. A log dir that
    cannot be written (another node's filesystem) leaves the output where Ray put it.
    """
    log_dir, name = os.environ.get(LOG_DIR_VAR), os.environ.get(LOG_NAME_VAR)
    if not log_dir or not name:
        return
    try:
        _point_fds_at(log_file(log_dir, name), (1, 2))
    except OSError:
        return
    for stream in (sys.stdout, sys.stderr):  # a worker's lines reach the file as they happen
        reconfigure = getattr(stream, "reconfigure", None)  # not part of TextIO
        if reconfigure is not None:
            reconfigure(line_buffering=True)


@contextmanager
def redirect_stderr(path: Path) -> Iterator[None]:
    """Inside the block, this process's stderr (fd 2: warnings, library logs, C++ messages,
    tqdm bars of libraries) goes to ``path``; afterwards it is restored. stdout stays."""
    saved = os.dup(2)
    try:
        _point_fds_at(path, (2,))
        yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
