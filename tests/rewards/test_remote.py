"""RemoteReward against a real HTTP server (uvicorn on loopback, in a thread): batching,
bounded retries, timeouts, contract violations and error messages."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from rewards.base import RewardItem
from rewards.remote import RemoteReward

calls: Counter[str] = Counter()
batch_sizes: list[int] = []
tokens: list[str | None] = []
app = FastAPI()


@app.post("/v1/rewards/{name}/score")
async def score(name: str, request: Request) -> Any:
    body = await request.json()
    items = body["items"]
    calls[name] += 1
    tokens.append(request.headers.get("authorization"))
    if name == "len":
        batch_sizes.append(len(items))
        return {"scores": [float(len(it["response"])) for it in items]}
    if name == "unavailable":
        raise HTTPException(503, "down for maintenance")
    if name == "flaky" and calls[name] < 3:
        return JSONResponse({"detail": "slow down"}, 429, headers={"Retry-After": "0"})
    if name == "flaky":
        return {"scores": [1.0] * len(items)}
    if name == "rejects":
        raise HTTPException(422, "reference missing")
    if name == "slow":
        await asyncio.sleep(2.0)
        return {"scores": [1.0] * len(items)}
    if name == "mixed":
        return {"scores": [1.0, "high", None, True], "errors": [None, None, "no answer", None]}
    if name == "not-json":
        return Response(content="<html>", media_type="text/html")
    raise HTTPException(404, "no such reward")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _items(n: int) -> list[RewardItem]:
    return [RewardItem("p", "x" * i, None) for i in range(n)]


def test_batches_keep_order_and_send_the_token(url: str) -> None:
    batch_sizes.clear()
    tokens.clear()
    reward = RemoteReward(url, name="len", batch_size=2, token="s3cret")
    assert [s.value for s in reward.score(_items(5))] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert batch_sizes == [2, 2, 1]
    assert tokens == ["Bearer s3cret"] * 3
    assert reward.score([]) == []


def test_5xx_is_retried_a_bounded_number_of_times(url: str) -> None:
    calls.clear()
    reward = RemoteReward(url, name="unavailable", retries=2, backoff_s=0.01)
    scores = reward.score(_items(2))
    assert calls["unavailable"] == 3
    for s in scores:
        assert s.value is None
        assert s.error == (f"POST {url}/v1/rewards/unavailable/score returned HTTP 503 after "
                           "3 attempts: down for maintenance")


def test_429_is_retried_until_it_succeeds(url: str) -> None:
    calls.clear()
    reward = RemoteReward(url, name="flaky", retries=3, backoff_s=0.01)
    assert [s.value for s in reward.score(_items(2))] == [1.0, 1.0]
    assert calls["flaky"] == 3


def test_4xx_is_not_retried(url: str) -> None:
    calls.clear()
    [score] = RemoteReward(url, name="rejects", retries=3, backoff_s=0.01).score(_items(1))
    assert calls["rejects"] == 1
    assert "HTTP 422" in score.error and "reference missing" in score.error


def test_read_timeout_is_an_error_not_a_retry(url: str) -> None:
    calls.clear()
    reward = RemoteReward(url, name="slow", timeout_s=0.3, retries=3, backoff_s=0.01)
    [score] = reward.score(_items(1))
    assert calls["slow"] == 1
    assert score.value is None and "timed out after 0.3s" in score.error


def test_connection_refused_is_retried_then_reported() -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    [score] = RemoteReward(dead, name="x", retries=2, backoff_s=0.01).score(_items(1))
    assert score.value is None
    assert f"POST {dead}/v1/rewards/x/score failed after 3 attempts: ConnectError" in score.error


def test_contract_violations_become_per_item_errors(url: str) -> None:
    scores = RemoteReward(url, name="mixed").score(_items(4))
    assert scores[0].value == 1.0
    assert scores[1].value is None and "'high' is not a finite number" in scores[1].error
    assert scores[2].value is None and "no answer" in scores[2].error
    assert scores[3].value is None and "True is not a finite number" in scores[3].error
    assert "expected 'scores' as a list of 2, got a list of 4" in \
        RemoteReward(url, name="mixed").score(_items(2))[0].error
    [s] = RemoteReward(url, name="not-json").score(_items(1))
    assert s.value is None and "not JSON" in s.error


def test_full_endpoint_url_without_name(url: str) -> None:
    reward = RemoteReward(f"{url}/v1/rewards/len/score")
    assert [s.value for s in reward.score(_items(2))] == [0.0, 1.0]


@pytest.mark.parametrize("kwargs", [
    {"url": "ftp://x"}, {"url": "http://x", "batch_size": 0}, {"url": "http://x", "retries": -1},
    {"url": "http://x", "timeout_s": 0},
])
def test_bad_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RemoteReward"):
        RemoteReward(**kwargs)
