"""Errors of a learner group, importable without torch, Ray or DeepSpeed (the CLI catches them).

* ``LearnerCallError``: a rank failed inside a fanned-out call (its Python exception is in
  the message).
* ``LearnerLostError``: a rank's process died or stopped answering. Not a user error and not
  a bug in the caller: the CLI prints it as one line (rank, method, the rank's log file) and
  exits with ``EXIT_STATUS``.

This module only defines classes.
"""

from __future__ import annotations


class LearnerCallError(RuntimeError):
    """A learner rank failed or timed out inside a fanned-out call."""


class LearnerLostError(LearnerCallError):
    """A learner rank died (its process is gone) or did not answer in time.

    ``ranks``: the ranks concerned; ``method``: the call they were running; ``logs``: the
    log file(s) of those ranks' worker processes, where the reason usually is.
    """

    #: the ``rlsys`` exit status for a lost worker (2 is a user error, 1 a traceback)
    EXIT_STATUS = 3

    def __init__(self, message: str, *, ranks: list[int], method: str,
                 logs: list[str]) -> None:
        super().__init__(message)
        self.ranks, self.method, self.logs = ranks, method, logs
