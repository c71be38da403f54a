"""Auth and input hardening: no token means no start (unless ``--insecure-no-auth``, which is
logged), the rate limit is reachable from the command line and keyed per token and client
address, strings that are not valid Unicode and URLs with control characters are 422, and a
body that is not parseable JSON is a documented 400. Real processes and HTTP on loopback."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from conftest import ROOT, TOKEN, Service, _stop, _wait_http, free_port

from rlsys.cli import main as rlsys_main


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("RLSYS_")}


def test_service_refuses_to_start_without_a_token(redis_server) -> None:
    for token in (None, "", "  "):
        env = _env() if token is None else {**_env(), "RLSYS_API_TOKEN": token}
        result = subprocess.run(
            [sys.executable, "-m", "rewards.service", "--port", str(free_port()),
             "--redis-url", redis_server.url], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].endswith(
            "error: no API token: set $RLSYS_API_TOKEN (or --token), or pass "
            "--insecure-no-auth to serve without authentication")


def test_rlsys_serve_errors_are_one_line_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    for name in ("RLSYS_API_TOKEN", "RLSYS_RATE_LIMIT_PER_MIN", "RLSYS_ALLOW_PLUGIN_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    assert rlsys_main(["serve", "--port", "0"]) == 2
    assert "rlsys serve: error: no API token" in capsys.readouterr().err
    assert rlsys_main(["serve", "--token", "t", "--rate-limit-per-min", "-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlsys serve: error: --rate-limit-per-min: ") and "\n" not in err


def test_insecure_no_auth_serves_openly_and_says_so(redis_server, tmp_path) -> None:
    port, log = free_port(), tmp_path / "service.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rewards.service", "--port", str(port), "--redis-url",
             redis_server.url, "--insecure-no-auth", "--log-level", "warning"],
            cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/rewards").status_code == 200
    finally:
        _stop(proc)
    assert "AUTHENTICATION IS DISABLED (--insecure-no-auth)" in log.read_text()


def _from(address: str, svc: Service) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=svc.url, transport=transport,
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def test_rate_limit_flag_is_keyed_per_token_and_client(redis_server, start_service) -> None:
    svc = start_service(redis_server.own_db_url(), "--rate-limit-per-min", "3")
    for _ in range(2):  # a second try only if a one-minute window ended mid-test
        with _from("127.0.0.1", svc) as first, _from("127.0.0.2", svc) as second:
            statuses = [first.get("/v1/rewards").status_code for _ in range(10)]
            assert 429 in statuses, statuses
            other_client = second.get("/v1/rewards").status_code
            still_limited = first.get("/v1/rewards").status_code
        if still_limited == 429:
            break
    assert other_client == 200 and still_limited == 429


@pytest.mark.parametrize("body", [
    b'{"items": [{"prompt": "\\ud800", "response": "r"}]}',
    b'{"items": [{"prompt": "p", "response": "ok \\udfff"}]}',
    b'{"items": [{"prompt": "p", "response": "r", "reference": {"k": ["\\ud83d"]}}]}',
    b'{"items": [{"prompt": "p", "response": "r", "reference": {"\\ud800": 1}}]}',
])
def test_lone_surrogates_are_422(service: Service, body: bytes) -> None:
    with service.client() as client:
        for reward in ("format", "math"):
            r = client.post(f"/v1/rewards/{reward}/score", content=body,
                            headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
            assert "not valid Unicode" in r.text
    ok = body.replace(b"\\ud800", b"\\u00e9").replace(b"\\udfff", b"x").replace(b"\\ud83d", b"")
    with service.client() as client:
        r = client.post("/v1/rewards/format/score", content=ok,
                        headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_undecodable_body_is_a_documented_400(service: Service) -> None:
    with service.client() as client:
        r = client.post("/v1/rewards/format/score", content=b'{"items": [\xff\xfe]}',
                        headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        paths = client.get("/openapi.json").json()["paths"]
    assert "400" in paths["/v1/rewards/{name}/score"]["post"]["responses"]
    assert "400" in paths["/v1/plugins"]["post"]["responses"]


@pytest.mark.parametrize("url", [
    "http://example.com/a\x00b", "http://example.com/\x7f", "http://exa\x01mple.com",
    "http://example.com/p\x1bq", "http://example.com/\u00e9", "http://example.com/\ud800",
])
def test_plugin_urls_with_control_characters_are_422(service: Service, url: str) -> None:
    body = json.dumps({"name": "ctl", "url": url}).encode()  # ASCII escapes: surrogates too
    with service.client() as client:
        r = client.post("/v1/plugins", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "url"]
