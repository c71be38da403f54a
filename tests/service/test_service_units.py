"""In-process pieces of the service: settings and flags (a token is required unless auth is
explicitly off), cache keys, plugin specs, the catch-all handler, and the rate limit over real
HTTP (flags and environment, per token and client)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from rewards.service import ServiceSettings, create_app
from rewards.service.flags import ServiceConfigError, add_service_arguments, settings_from_args
from rewards.service.schemas import PluginSpec
from rewards.service.store import cache_key


def test_settings_token_from_env_and_strictness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLSYS_API_TOKEN", "from-env")
    assert ServiceSettings().token == "from-env"
    assert ServiceSettings(token="explicit").token == "explicit"
    for empty in ("", "   "):  # an empty token must not silently disable auth
        monkeypatch.setenv("RLSYS_API_TOKEN", empty)
        with pytest.raises(ValidationError, match="no API token.*--insecure-no-auth"):
            ServiceSettings()
        with pytest.raises(ValidationError, match="no API token"):
            ServiceSettings(token=empty)
    monkeypatch.delenv("RLSYS_API_TOKEN")
    with pytest.raises(ValidationError, match="no API token"):
        ServiceSettings()
    assert ServiceSettings(insecure_no_auth=True).token is None
    assert ServiceSettings(token="t").max_body_bytes == 16 * 1024 * 1024
    monkeypatch.setenv("RLSYS_REDIS_URL", "redis://redis.internal:6380/2")
    assert ServiceSettings(token="t").redis_url == "redis://redis.internal:6380/2"
    monkeypatch.delenv("RLSYS_REDIS_URL")
    assert ServiceSettings(token="t").redis_url == "redis://127.0.0.1:6379/0"
    with pytest.raises(ValidationError, match="max_batch"):
        ServiceSettings(token="t", max_batch=0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ServiceSettings(token="t", tokn="typo")


def _flags(*argv: str) -> ServiceSettings:
    import argparse

    parser = argparse.ArgumentParser()
    add_service_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)), token="t")


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RLSYS_RATE_LIMIT_PER_MIN", "RLSYS_ALLOW_PLUGIN_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    plain = _flags()
    assert plain.rate_limit_per_min == 0 and plain.allow_plugin_hosts == ()
    monkeypatch.setenv("RLSYS_RATE_LIMIT_PER_MIN", "120")
    monkeypatch.setenv("RLSYS_ALLOW_PLUGIN_HOSTS", "127.0.0.1, plugins.internal")
    from_env = _flags()
    assert from_env.rate_limit_per_min == 120
    assert from_env.allow_plugin_hosts == ("127.0.0.1", "plugins.internal")
    flags = _flags("--rate-limit-per-min", "7", "--allow-plugin-host", "10.0.0.0/8",
                   "--allow-plugin-host", "::1", "--grading-budget-s", "2.5",
                   "--plugin-concurrency", "3")
    assert flags.rate_limit_per_min == 7 and flags.allow_plugin_hosts == ("10.0.0.0/8", "::1")
    assert flags.grading_budget_s == 2.5 and flags.plugin_concurrency == 3
    with pytest.raises(ServiceConfigError, match=r"^--rate-limit-per-min: .*greater than or"):
        _flags("--rate-limit-per-min", "-1")
    monkeypatch.setenv("RLSYS_RATE_LIMIT_PER_MIN", "lots")
    with pytest.raises(ServiceConfigError, match="RLSYS_RATE_LIMIT_PER_MIN='lots'"):
        _flags()


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
    app = create_app(ServiceSettings(insecure_no_auth=True, redis_url="redis://127.0.0.1:1/0"))

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
    svc = start_service(redis_server.own_db_url(), "--rate-limit-per-min", "3")
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
