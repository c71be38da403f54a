"""In-process pieces of the service: settings, cache keys, plugin specs, the catch-all handler,
and the rate limit over real HTTP."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from rewards.service import ServiceSettings, create_app
from rewards.service.schemas import PluginSpec
from rewards.service.store import cache_key


def test_settings_token_from_env_and_strictness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLSYS_API_TOKEN", "from-env")
    assert ServiceSettings().token == "from-env"
    assert ServiceSettings(token="explicit").token == "explicit"
    monkeypatch.delenv("RLSYS_API_TOKEN")
    assert ServiceSettings().token is None
    assert ServiceSettings().max_body_bytes == 16 * 1024 * 1024
    monkeypatch.setenv("RLSYS_REDIS_URL", "redis://redis.internal:6380/2")
    assert ServiceSettings().redis_url == "redis://redis.internal:6380/2"
    monkeypatch.delenv("RLSYS_REDIS_URL")
    assert ServiceSettings().redis_url == "redis://127.0.0.1:6379/0"
    with pytest.raises(ValidationError, match="max_batch"):
        ServiceSettings(max_batch=0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ServiceSettings(tokn="typo")


def test_cache_key_covers_every_field() -> None:
    base = ("math", "1", "p", "r", {"a": [1, 2]})
    key = cache_key(*base)
    assert key == cache_key("math", "1", "p", "r", {"a": [1, 2]})
    for i, other in enumerate(("code", "2", "p2", "r2", {"a": [2, 1]})):
        changed = list(base)
        changed[i] = other
        assert cache_key(*changed) != key, i
    assert cache_key("m", "1", "p", "r", None) != cache_key("m", "1", "p", "r", "null")


def test_plugin_spec_normalises_url() -> None:
    spec = PluginSpec(name="my.plugin-1", url="https://example.com:8443/prefix/")
    assert spec.url == "https://example.com:8443/prefix" and spec.timeout_s is None
    with pytest.raises(ValidationError, match="name"):
        PluginSpec(name="../etc", url="http://x")


def test_unexpected_errors_become_a_generic_500() -> None:
    app = create_app(ServiceSettings(token=None, redis_url="redis://127.0.0.1:1/0"))

    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
        assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
        assert "secret" not in r.text
        # Redis on port 1 is down: health says so, built-ins still score.
        assert client.get("/healthz").json()["redis"] == "down"
        r = client.post("/v1/rewards/format/score",
                        json={"items": [{"prompt": "p", "response": "\\boxed{1}"}]})
        assert r.json()["scores"] == [1.0]
        metrics = client.get("/metrics").text
    assert 'rlsys_http_requests_total{method="GET",route="/boom",status="500"} 1.0' in metrics


def test_rate_limit_per_token_gives_429_with_retry_after(redis_server, start_service) -> None:
    svc = start_service(redis_server.url, "--rate-limit-per-min", "3")
    statuses, retry_after = [], None
    with svc.client() as client:
        for _ in range(10):  # <= 3 per one-minute window, even if a window boundary passes
            r = client.get("/v1/rewards")
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_after = int(r.headers["retry-after"])
                assert "3 requests/min" in r.json()["detail"]
                break
        assert client.get("/healthz").status_code == 200  # not rate limited
    assert statuses[-1] == 429 and 3 <= statuses.count(200) <= 6
    assert retry_after is not None and 1 <= retry_after <= 61
