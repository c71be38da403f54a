"""A small pool of long-lived worker processes that run ``compare.equivalent`` under a timeout.

Each worker is a separate interpreter (``python -m rewards.math.worker``) talking JSON lines
over pipes, so it never re-imports the caller's ``__main__`` and works from scripts without a
``__main__`` guard. The parent waits at most ``timeout`` seconds (``select`` on the pipe) for
an answer; past that it kills the worker and reports False; a fresh worker is started on the
next request. No signals are used, so calls work from any thread; the pool is thread-safe.
This module does not parse or compare anything itself.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_STARTUP_TIMEOUT_S = 120.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH"))
                                            if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rewards.math.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1)
        if self.proc.stdin is None or self.proc.stdout is None:  # pragma: no cover - PIPE given
            raise RuntimeError("math checker worker started without pipes")
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        if self._read_line(_STARTUP_TIMEOUT_S) != "ready":
            self.kill()
            raise RuntimeError(f"math checker worker failed to start ({sys.executable} -m "
                               "rewards.math.worker; is sympy installed there?)")

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def _read_line(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.stdout.readline()
        return line.strip() if line else None

    def ask(self, pred: str, gold: str, timeout: float) -> bool | None:
        """The verdict, or None when the worker timed out or died (it is then killed)."""
        try:
            self.stdin.write(json.dumps([pred, gold]) + "\n")
            self.stdin.flush()
            answer = self._read_line(timeout)
        except (OSError, ValueError):
            answer = None
        if answer in ("0", "1"):
            return answer == "1"
        self.kill()
        return None

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill the process and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except OSError:
                pass


class VerifierPool:
    """Up to ``size`` worker processes, created on demand and replaced when killed."""

    def __init__(self, size: int | None = None) -> None:
        self.size = max(1, size or os.cpu_count() or 1)
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self.replaced = 0

    def _acquire(self, deadline: float | None = None) -> _Worker | None:
        """An idle or new worker; None when ``deadline`` passes while all are busy."""
        with self._cond:
            while True:
                while not self._idle and self._count >= self.size:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    self._cond.wait(remaining)
                if not self._idle:
                    break
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                worker.kill()  # died while idle (killed from outside): replace it
                self._count -= 1
                self.replaced += 1
            self._count += 1
        try:
            return _Worker()
        except Exception:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker | None) -> None:
        with self._cond:
            if worker is None:
                self._count -= 1
                self.replaced += 1
            else:
                self._idle.append(worker)
            self._cond.notify()

    def verdict(self, pred: str, gold: str, timeout: float,
                queue_counts: bool = False) -> bool | None:
        """One comparison in a worker; None on timeout (the worker is then replaced).

        With ``queue_counts`` the wait for a free worker is part of ``timeout`` (``verify``
        from many threads); otherwise only the comparison itself is timed (batches).
        """
        deadline = time.monotonic() + timeout if queue_counts else None
        worker = self._acquire(deadline)
        if worker is None:
            return None
        if deadline is not None:
            timeout = max(0.0, deadline - time.monotonic())
        verdict = worker.ask(pred, gold, timeout)
        self._release(worker if verdict is not None else None)
        return verdict

    def check(self, pred: str, gold: str, timeout: float, queue_counts: bool = False) -> bool:
        """``verdict`` with a timeout reported as False."""
        return bool(self.verdict(pred, gold, timeout, queue_counts))

    def verdicts(self, pairs: Sequence[tuple[str, str]],
                 timeout: float) -> list[bool | None]:
        """Many comparisons, spread over the workers (one feeding thread per worker); None
        where a comparison timed out."""
        if len(pairs) <= 1:
            return [self.verdict(p, g, timeout) for p, g in pairs]
        with ThreadPoolExecutor(max_workers=min(self.size, len(pairs))) as ex:
            return list(ex.map(lambda pair: self.verdict(pair[0], pair[1], timeout), pairs))

    def check_many(self, pairs: Sequence[tuple[str, str]], timeout: float) -> list[bool]:
        """``verdicts`` with timeouts reported as False."""
        return [bool(v) for v in self.verdicts(pairs, timeout)]

    def close(self) -> None:
        """Kill every idle worker (busy ones are killed by their callers' timeouts)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.kill()

    def pids(self) -> list[int]:
        """Process ids of the idle workers (for tests and monitoring)."""
        with self._cond:
            return [w.pid for w in self._idle]
