"""The reward service over real HTTP: auth, limits, bad input, health, metrics, built-ins."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import TOKEN, Service

from rewards.service import guards


def _items(*responses: str, reference: object = None) -> dict:
    return {"items": [{"prompt": "p", "response": r, "reference": reference} for r in responses]}


def test_auth_guards_v1_and_metrics_but_not_healthz(service: Service) -> None:
    for token in (None, "wrong", TOKEN + "x"):
        with service.client(token) as client:
            assert client.get("/v1/rewards").status_code == 401
            assert client.get("/metrics").status_code == 401
            r = client.post("/v1/rewards/format/score", json=_items("x"))
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == "Bearer"
            assert client.get("/healthz").status_code == 200
    with service.client() as client:
        assert client.get("/v1/rewards").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_token_check_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = guards.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(guards.hmac, "compare_digest", spy)
    assert guards.token_matches("Bearer s3cret", "s3cret")
    assert not guards.token_matches("Bearer s3cre", "s3cret")
    assert not guards.token_matches(None, "s3cret")
    assert seen[0] == (b"s3cret", b"s3cret") and len(seen) == 3


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer s3cret", True), ("bearer s3cret", True), ("BEARER s3cret", True),
    ("bEaReR   s3cret ", True), ("Basic s3cret", False), ("Bearers3cret", False),
    ("s3cret", False), ("Bearer s3cret2", False), ("Bearer", False), ("", False),
])
def test_bearer_scheme_is_case_insensitive(header: str, ok: bool) -> None:
    """RFC 7235: the auth scheme is case-insensitive; the credentials are not."""
    assert guards.token_matches(header, "s3cret") is ok
    assert not guards.token_matches(header.replace("s3cret", "S3CRET"), "s3cret")


def test_lowercase_bearer_over_http(service: Service) -> None:
    r = httpx.get(f"{service.url}/v1/rewards", headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 200


def test_body_limit_with_content_length_and_chunked(service: Service) -> None:
    big = json.dumps(_items("x" * 70_000)).encode()  # > the fixture's 64 KiB
    with service.client() as client:
        r = client.post("/v1/rewards/format/score", content=big,
                        headers={"content-type": "application/json"})
        assert r.status_code == 413 and "65536" in r.json()["detail"]

        def chunks():  # no Content-Length: Transfer-Encoding: chunked
            for start in range(0, len(big), 8192):
                yield big[start:start + 8192]

        r = client.post("/v1/rewards/format/score", content=chunks(),
                        headers={"content-type": "application/json"})
        assert r.status_code == 413 and "65536" in r.json()["detail"]
        small = json.dumps(_items("\\boxed{1}")).encode()
        r = client.post("/v1/rewards/format/score", content=iter([small[:5], small[5:]]),
                        headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["scores"] == [1.0]


def test_batch_limit_is_413_naming_the_limit(service: Service) -> None:
    with service.client() as client:
        r = client.post("/v1/rewards/format/score", json=_items(*["a"] * 17))
        assert r.status_code == 413
        assert "17 items" in r.json()["detail"] and "16 (max_batch)" in r.json()["detail"]
        assert client.post("/v1/rewards/format/score", json=_items(*["a"] * 16)).status_code \
            == 200


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b'{"items": "x"}', b'{"items": [{"prompt": 1, "response": "r"}]}',
    b'{"items": [{"prompt": "p"}]}', b'{"items": [], "extra": 1}', b"",
])
def test_malformed_bodies_are_422(service: Service, body: bytes) -> None:
    with service.client() as client:
        r = client.post("/v1/rewards/format/score", content=body,
                        headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "Traceback" not in r.text


def test_bad_names_and_unknown_rewards(service: Service) -> None:
    with service.client() as client:
        r = client.post("/v1/rewards/nope/score", json=_items("x"))
        assert r.status_code == 404 and "'nope'" in r.json()["detail"]
        assert "math" in r.json()["detail"]
        assert client.post("/v1/rewards/..%2F/score", json=_items("x")).status_code in (404, 422)


def test_healthz_reports_redis(service: Service) -> None:
    r = httpx.get(f"{service.url}/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "redis": "ok"}


def test_list_rewards_has_builtins_with_schema(service: Service) -> None:
    with service.client() as client:
        body = client.get("/v1/rewards").json()
    builtins = {r["name"]: r for r in body["rewards"] if r["kind"] == "builtin"}
    assert set(builtins) == {"math", "code", "format"}
    assert "items" in builtins["math"]["input_schema"]["properties"]
    assert body["plugins_available"] is True


def test_format_scores_and_cache_metrics(service: Service) -> None:
    with service.client() as client:
        payload = _items("so \\boxed{42}", "\\boxed{}", "no box", "cache-probe-7f3a")
        first = client.post("/v1/rewards/format/score", json=payload).json()
        assert first == {"scores": [1.0, 0.0, 0.0, 0.0], "errors": [None] * 4}
        before = _metric(client, 'rlsys_cache_hits_total{reward="format"}')
        assert client.post("/v1/rewards/format/score", json=payload).json() == first
        after = _metric(client, 'rlsys_cache_hits_total{reward="format"}')
        assert after - before == 4
        text = client.get("/metrics").text
    assert 'rlsys_http_requests_total{method="POST",route="/v1/rewards/{name}/score",' \
           'status="200"}' in text
    assert "rlsys_http_request_duration_seconds_bucket" in text
    assert 'rlsys_cache_misses_total{reward="format"}' in text


def test_math_scores_with_per_item_errors(service: Service) -> None:
    items = [{"prompt": "1+1?", "response": "It is \\boxed{2}.", "reference": "2"},
             {"prompt": "1+1?", "response": "It is \\boxed{3}.", "reference": "2"},
             {"prompt": "half?", "response": "\\boxed{\\frac{1}{2}}", "reference": "0.5"},
             {"prompt": "bad", "response": "\\boxed{2}", "reference": None}]
    with service.client() as client:
        r = client.post("/v1/rewards/math/score", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scores"][:3] == [1.0, 0.0, 1.0]
    assert body["errors"][:3] == [None, None, None]
    # The missing reference fails that item only, with a message (never a silent 0).
    assert body["scores"][3] is None and body["errors"][3]


def test_code_scoring_through_the_sandbox(service: Service) -> None:
    program = "def add(a, b):\n    return a + b\n"
    items = [{"prompt": "write add", "response": program, "reference": "assert add(2, 3) == 5"},
             {"prompt": "write add", "response": program, "reference": "assert add(2, 3) == 6"}]
    with service.client() as client:
        r = client.post("/v1/rewards/code/score", json={"items": items})
        assert r.status_code == 200, r.text
        assert r.json()["scores"] == [1.0, 0.0]
        text = client.get("/metrics").text
    assert 'rlsys_sandbox_verdicts_total{status="passed"}' in text
    assert 'rlsys_sandbox_verdicts_total{status="failed"}' in text


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_event_loop_stays_responsive_during_slow_scoring(service: Service) -> None:
    """A slow sandboxed program occupies a worker thread; /healthz still answers meanwhile."""
    import threading

    done = threading.Event()
    result: dict = {}

    def slow_score() -> None:
        item = {"prompt": "p", "response": "import time\ntime.sleep(4)\n",
                "reference": "assert True"}
        with service.client() as client:
            result["r"] = client.post("/v1/rewards/code/score", json={"items": [item]})
        done.set()

    thread = threading.Thread(target=slow_score)
    thread.start()
    try:
        assert not done.wait(1.0)  # the slow request is in flight
        assert httpx.get(f"{service.url}/healthz", timeout=30).status_code == 200
        assert not done.is_set()  # ...and health answered before it finished
    finally:
        thread.join(60)
    assert result["r"].json()["scores"] == [1.0]
