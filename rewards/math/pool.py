"""A small pool of long-lived worker processes that run ``compare.equivalent`` under a timeout.

Each worker is a ``forkserver`` child (sympy is preloaded in the fork server, so a replacement
starts in milliseconds) talking over a pipe. The parent waits at most ``timeout`` seconds for
an answer; past that it kills the worker, starts a fresh one and reports False. No signals are
used, so calls work from any thread; the pool is shared and thread-safe. Workers also run
under an address-space limit so a memory bomb dies instead of swapping. This module does not
parse or compare anything itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

WORKER_MEMORY_BYTES = 2 * 1024**3
_MODULES_TO_PRELOAD = ["rewards.math.compare", "rewards.math.relations"]


def _serve(conn) -> None:
    """Worker loop: receive (pred, gold), answer a bool; never raises on bad input."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    from rewards.math.compare import equivalent

    while True:
        try:
            pred, gold = conn.recv()
        except (EOFError, OSError):
            return
        try:
            verdict = bool(equivalent(pred, gold))
        except Exception:  # noqa: BLE001 - model text must never crash the worker
            verdict = False
        conn.send(verdict)


class _Worker:
    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def ask(self, pred: str, gold: str, timeout: float) -> bool | None:
        """The verdict, or None when the worker timed out or died (it is then killed)."""
        try:
            self.conn.send((pred, gold))
            if self.conn.poll(timeout):
                return bool(self.conn.recv())
        except (EOFError, OSError, BrokenPipeError):
            pass
        self.kill()
        return None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class VerifierPool:
    """Up to ``size`` worker processes, created on demand and replaced when killed."""

    def __init__(self, size: int | None = None) -> None:
        self.size = max(1, size or os.cpu_count() or 1)
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(_MODULES_TO_PRELOAD)
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self.replaced = 0

    def _acquire(self) -> _Worker:
        with self._cond:
            while not self._idle and self._count >= self.size:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return _Worker(self._ctx)
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

    def check(self, pred: str, gold: str, timeout: float) -> bool:
        """One comparison in a worker; False on timeout (the worker is then replaced)."""
        worker = self._acquire()
        verdict = worker.ask(pred, gold, timeout)
        self._release(worker if verdict is not None else None)
        return bool(verdict)

    def check_many(self, pairs: Sequence[tuple[str, str]], timeout: float) -> list[bool]:
        """Many comparisons, spread over the workers (one feeding thread per worker)."""
        if len(pairs) <= 1:
            return [self.check(p, g, timeout) for p, g in pairs]
        with ThreadPoolExecutor(max_workers=min(self.size, len(pairs))) as ex:
            return list(ex.map(lambda pair: self.check(pair[0], pair[1], timeout), pairs))

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
            return [w.proc.pid for w in self._idle]
