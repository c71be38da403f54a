"""Bounded, fair grading of built-in rewards: the scheduler (least-served request first, a
budget per request, queued work never started once the budget is gone) on real threads, and
the live service: items past the budget come back timed out, a slow request does not hold back
a later one, and neither a budget timeout nor a math-checker timeout is cached as a score."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import redis
from conftest import Service

from rewards.service.grading import TIMED_OUT, FairGrader
from rewards.service.store import cache_key

# sympy needs far more than the checker's 5 s timeout for this pair (it never finishes).
SLOW = {"prompt": "p", "response": "\\boxed{e^{e^{e^{e^{x}}}}+3i}",
        "reference": "e^{e^{e^{e^{x}}}}+i"}


def _until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_scheduler_serves_a_new_request_before_the_rest_of_an_old_one() -> None:
    grader, order, gate = FairGrader(slots=1), [], threading.Event()

    def fn(label: str) -> str:
        if label == "A1":
            gate.wait(30)  # hold the only slot until B is queued
        order.append(label)
        return label.lower()

    async def scenario() -> tuple[list, list]:
        a = asyncio.ensure_future(grader.run(fn, ["A1", "A2", "A3", "A4"], budget_s=60))
        while grader.running == 0:
            await asyncio.sleep(0.01)
        b = asyncio.ensure_future(grader.run(fn, ["B1", "B2"], budget_s=60))
        while grader.waiting < 5:
            await asyncio.sleep(0.01)
        gate.set()
        return await a, await b

    a, b = asyncio.run(scenario())
    assert a == ["a1", "a2", "a3", "a4"] and b == ["b1", "b2"]
    assert order == ["A1", "B1", "A2", "B2", "A3", "A4"]


def test_scheduler_budget_times_out_and_never_starts_queued_chunks() -> None:
    grader, started, gate = FairGrader(slots=1), [], threading.Event()

    def fn(label: str) -> str:
        started.append(label)
        gate.wait(30)
        return label

    async def scenario() -> list:
        try:
            return await grader.run(fn, ["c1", "c2", "c3"], budget_s=0.2)
        finally:
            gate.set()  # after the budget ran out: c1 finishes late, its result is dropped

    assert asyncio.run(scenario()) == [TIMED_OUT] * 3
    assert started == ["c1"] and grader.waiting == 0


def _cached(redis_url: str, item: dict) -> bool:
    key = cache_key("math", "1", item["prompt"], item["response"], item["reference"])
    return bool(redis.Redis.from_url(redis_url).exists(key))


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_items_past_the_budget_are_timed_out_and_not_cached(redis_server,
                                                            start_service) -> None:
    svc = start_service(redis_server.url, "--grading-budget-s", "1",
                        "--grading-concurrency", "1")
    items = [dict(SLOW, reference=f"e^{{e^{{e^{{e^{{x}}}}}}}}+{k}i") for k in (5, 6, 7)]
    with svc.client() as client:
        r = client.post("/v1/rewards/math/score", json={"items": items})
        assert r.status_code == 200
        late = ("timed out: not graded within the request's grading budget of 1 s "
                "(grading_budget_s)")
        assert r.json() == {"scores": [None] * 3, "errors": [late] * 3}
        assert _metric(client, 'rlsys_grading_timeouts_total{reward="math"}') == 3.0
    assert not any(_cached(redis_server.url, item) for item in items)


def test_math_checker_timeout_is_scored_but_not_cached(redis_server, service: Service) -> None:
    quick = {"prompt": "p", "response": "\\boxed{\\frac{1}{2}}", "reference": "0.5 "}
    with service.client() as client:
        r = client.post("/v1/rewards/math/score", json={"items": [SLOW, quick]})
    assert r.json() == {"scores": [0.0, 1.0], "errors": [None, None]}
    assert not _cached(redis_server.url, SLOW)  # a timeout is not a verdict
    assert _cached(redis_server.url, quick)


def test_a_slow_request_does_not_hold_back_a_later_one(redis_server, start_service) -> None:
    svc = start_service(redis_server.url, "--grading-concurrency", "1")
    slow_items = [dict(SLOW, reference=f"e^{{e^{{e^{{e^{{x}}}}}}}}+{k}i") for k in (8, 9)]
    quick = {"prompt": "p", "response": "\\boxed{\\frac{3}{4}}", "reference": "0.75"}
    done: dict[str, httpx.Response] = {}

    def slow() -> None:
        with svc.client() as client:
            done["slow"] = client.post("/v1/rewards/math/score", json={"items": slow_items})

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        with svc.client() as client:
            _until(lambda: _metric(client, 'rlsys_cache_misses_total{reward="math"}') >= 2)
            r = client.post("/v1/rewards/math/score", json={"items": [quick]})
        assert r.json()["scores"] == [1.0]
        assert "slow" not in done, "the quick request waited for the whole slow batch"
    finally:
        thread.join(120)
    assert done["slow"].json()["scores"] == [0.0, 0.0]
