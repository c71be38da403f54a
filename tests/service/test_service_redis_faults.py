"""Redis dies mid-run and comes back on the same port: the service degrades and recovers
without a restart."""

from __future__ import annotations

import time

from conftest import RedisServer

from rewards.base import RewardItem
from rewards.remote import RemoteReward


def _wait_for(predicate, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_redis_down_then_back(start_service, plugin_url: str) -> None:
    redis_server = RedisServer()
    try:
        svc = start_service(redis_server.url)
        with svc.client() as client:
            plugin = {"name": "length", "url": plugin_url}
            assert client.post("/v1/plugins", json=plugin).status_code == 201
            redis_server.kill()

            assert client.get("/healthz").json() == {"status": "ok", "redis": "down"}
            r = client.post("/v1/rewards/format/score",
                            json={"items": [{"prompt": "p", "response": "\\boxed{7}"}]})
            assert r.status_code == 200 and r.json()["scores"] == [1.0]
            r = client.post("/v1/plugins", json={"name": "other", "url": plugin_url})
            assert r.status_code == 503 and "Redis" in r.json()["detail"]
            assert client.delete("/v1/plugins/length").status_code == 503
            r = client.post("/v1/rewards/length/score",
                            json={"items": [{"prompt": "p", "response": "x"}]})
            assert r.status_code == 503
            assert client.get("/v1/rewards").json()["plugins_available"] is False
            # A RemoteReward client retries the 503s, then reports them per item.
            remote = RemoteReward(svc.url, name="length", token=svc.token, retries=2,
                                  backoff_s=0.01)
            [score] = remote.score([RewardItem("p", "x")])
            assert score.value is None
            assert "HTTP 503 after 3 attempts" in score.error and svc.url in score.error

            redis_server.start()  # empty: --save '' means the old registry is gone
            _wait_for(lambda: client.get("/healthz").json()["redis"] == "ok")
            _wait_for(lambda: client.post("/v1/plugins", json=plugin).status_code == 201)
            r = client.post("/v1/rewards/length/score",
                            json={"items": [{"prompt": "p", "response": "xyz"}]})
            assert r.status_code == 200 and r.json()["scores"] == [3.0]
    finally:
        redis_server.stop()
