"""Errors of the rollout/reward/judge worker pools, importable without Ray or torch (the CLI
catches them and prints one line).

This module only defines classes; ``actors.launch`` raises them.
"""

from __future__ import annotations


class WorkerError(RuntimeError):
    """A remote call on one pool worker failed or timed out (its message names the pool, the
    worker, its pid, the phase and, in a quiet run, the worker's log file)."""

    #: the ``rlsys`` exit status for a failed worker (2 is a user error, 1 a traceback)
    EXIT_STATUS = 3

    def __init__(self, pool: str, index: int, pid: int | None, phase: str, cause: BaseException,
                 log: str | None = None):
        self.pool, self.index, self.pid, self.phase, self.cause = pool, index, pid, phase, cause
        self.log = log
        text = str(cause)
        if log and "\n" in text:  # Ray's multi-line report: its last line is the worker's error,
            text = [line for line in text.splitlines() if line.strip()][-1]  # the rest is in log
        super().__init__(f"{pool} worker {index} (pid {pid or '?'}) failed during {phase!r}: "
                         f"{type(cause).__name__}: {text}" + (f"; its log: {log}" if log else ""))
