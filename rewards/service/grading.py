"""Fair, bounded grading of built-in rewards: shared fairly between requests, a budget per
request.

``FairGrader.run(fn, chunks, budget_s)`` runs ``fn(chunk)`` for each chunk in the threadpool
(built-in rewards are CPU-bound or wait on sandboxes). At most ``slots`` chunks run at once,
across all requests, and a free slot goes to the waiting request that has had the fewest chunks
started so far (the earliest on a tie): a new request goes next, and a request of many slow
items delays another one by the chunks already running, not by its whole batch. Each request
has a total budget (``grading_budget_s``) counted from its arrival: chunks not finished by then
come back as ``TIMED_OUT`` (those still queued are never started; a running one keeps its slot
until its thread returns, but its result is dropped).

Everything here runs on the event loop; nothing is cancelled inside a thread (the rewards have
their own per-item timeouts). This module knows nothing of rewards, Redis or HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from starlette.concurrency import run_in_threadpool

TIMED_OUT: Final = object()


@dataclass
class _Job:
    fn: Callable[[Any], Any]
    chunk: Any
    future: asyncio.Future[Any]


class FairGrader:
    """Fair (least-served-first) scheduler of grading chunks over ``slots`` threadpool
    workers."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"FairGrader needs at least one slot, got {slots}")
        self.slots = slots
        self.running = 0
        self._queues: dict[int, deque[_Job]] = {}
        self._started: dict[int, int] = {}
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    @property
    def waiting(self) -> int:
        """Chunks queued (not started) over all requests."""
        return sum(len(q) for q in self._queues.values())

    async def run(self, fn: Callable[[Any], Any], chunks: Sequence[Any],
                  budget_s: float) -> list[Any]:
        """``[fn(c) for c in chunks]``, with ``TIMED_OUT`` for chunks not done within
        ``budget_s`` seconds; an exception raised by ``fn`` is re-raised here."""
        if not chunks:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        rid = next(self._ids)
        jobs = [_Job(fn, chunk, loop.create_future()) for chunk in chunks]
        self._queues[rid], self._started[rid] = deque(jobs), 0
        try:
            self._pump()
            futures = [job.future for job in jobs]
            remaining = deadline - loop.time()
            if remaining > 0:
                await asyncio.wait(futures, timeout=remaining)
        finally:
            self._queues.pop(rid, None)  # never start what nobody waits for
            self._started.pop(rid, None)
        return [job.future.result() if job.future.done() and not job.future.cancelled()
                else TIMED_OUT for job in jobs]

    def _pump(self) -> None:
        while self.running < self.slots and self._queues:
            rid = min(self._queues, key=lambda r: (self._started[r], r))  # least served first
            queue = self._queues[rid]
            job = queue.popleft()
            self._started[rid] += 1
            if not queue:
                del self._queues[rid]
            self.running += 1
            task = asyncio.ensure_future(self._execute(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, job: _Job) -> None:
        try:
            result = await run_in_threadpool(job.fn, job.chunk)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            if not job.future.done():
                job.future.set_result(result)
        finally:
            self.running -= 1
            self._pump()
