"""Plugin calls are bounded: a total deadline (a trickling plugin is cut off, and it sees the
connection close), a response-size cap, a concurrency pool of their own (built-ins answer while
it is full), a hop marker that stops a plugin pointing back at the service, and short errors
that never echo the plugin's body. Real uvicorn processes and a real plugin server."""

from __future__ import annotations

import threading
import time

import httpx
from conftest import Service
from plugin_server import SECRET


def _items(*responses: str) -> dict:
    return {"items": [{"prompt": "p", "response": r} for r in responses]}


def _register(client: httpx.Client, name: str, url: str, **extra: object) -> None:
    r = client.post("/v1/plugins", json={"name": name, "url": url, **extra})
    assert r.status_code in (200, 201), r.text


def _streams(plugin_url: str, name: str) -> dict[str, int]:
    stats = httpx.get(f"{plugin_url}/streams").json()
    return {k.split(":")[1]: v for k, v in stats.items() if k.startswith(f"{name}:")}


def _wait_for(predicate, what: str, timeout_s: float = 30.0) -> None:
    """Poll (a generous bound for a loaded machine; not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def test_trickling_plugin_is_cut_at_the_total_deadline(service: Service,
                                                       plugin_url: str) -> None:
    """One byte every 0.5 s keeps every read under any per-read timeout; the total deadline
    still ends the call, and the plugin sees its connection closed."""
    with service.client() as client:
        _register(client, "trickle", plugin_url, timeout_s=1)
        r = client.post("/v1/rewards/trickle/score", json=_items("a", "b"))
    assert r.status_code == 200
    assert r.json() == {"scores": [None, None],
                        "errors": ["plugin 'trickle' timed out after 1 s"] * 2}
    _wait_for(lambda: _streams(plugin_url, "trickle").get("cut", 0) == 1,
              "the trickle server saw the connection closed")
    assert _streams(plugin_url, "trickle")["opened"] == 1


def test_oversized_answer_is_cut_off(redis_server, start_service, plugin_url: str) -> None:
    svc = start_service(redis_server.url, "--plugin-max-response-bytes", "65536")
    with svc.client() as client:
        _register(client, "huge", plugin_url)
        r = client.post("/v1/rewards/huge/score", json=_items("a"))
    assert r.json() == {"scores": [None],
                        "errors": ["plugin 'huge' failed: answer larger than 65536 bytes"]}
    _wait_for(lambda: _streams(plugin_url, "huge").get("cut", 0) == 1,
              "the streaming server saw the connection closed")


def test_plugin_pool_is_bounded_and_builtins_never_wait_for_it(
        redis_server, start_service, plugin_url: str) -> None:
    svc = start_service(redis_server.url, "--plugin-concurrency", "2")
    name, results = "trickle-pool", []
    with svc.client() as client:
        _register(client, name, plugin_url, timeout_s=8)
        assert client.post("/v1/rewards/format/score", json=_items("x")).status_code == 200

    def call() -> None:
        with svc.client() as c:
            results.append(c.post(f"/v1/rewards/{name}/score", json=_items("a")).json())

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: _streams(plugin_url, name).get("opened", 0) == 2,
                  "two plugin calls in flight")
        with svc.client() as client:  # the plugin pool is full; a built-in still answers
            r = client.post("/v1/rewards/format/score", json=_items("\\boxed{5}"))
        assert r.json()["scores"] == [1.0]
        assert results == [], "the built-in answered only after plugin calls ended"
    finally:
        for thread in threads:
            thread.join(60)
    assert results == [{"scores": [None], "errors": [f"plugin {name!r} timed out after 8 s"]}] * 6
    assert _streams(plugin_url, name)["max_open"] == 2  # the others waited for a slot


def _metric(client: httpx.Client, prefix: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def test_plugin_pointing_at_the_service_itself_is_refused_not_looped(
        redis_server, start_service) -> None:
    svc = start_service(redis_server.url, token=None)  # no auth: nothing else would stop it
    route = 'rlsys_http_requests_total{method="POST",route="/v1/rewards/{name}/score",'
    with svc.client() as client:
        _register(client, "loop", svc.url, timeout_s=10)
        r = client.post("/v1/rewards/loop/score", json=_items("a"))
        assert r.json() == {"scores": [None], "errors": ["plugin 'loop' failed: HTTP 508"]}
        assert _metric(client, route + 'status="508"}') == 1.0  # one hop, then refused
        assert _metric(client, route + 'status="200"}') == 1.0


def test_plugin_bodies_and_long_item_errors_are_not_echoed(service: Service,
                                                           plugin_url: str) -> None:
    with service.client() as client:
        _register(client, "bad", plugin_url)
        _register(client, "chatty", plugin_url)
        bad = client.post("/v1/rewards/bad/score", json=_items("a"))
        chatty = client.post("/v1/rewards/chatty/score", json=_items("a", "b"))
    assert bad.json()["errors"] == ["plugin 'bad' failed: HTTP 400"]
    assert SECRET not in bad.text
    errors = chatty.json()["errors"]  # 1 MB each at the plugin
    assert all(e.startswith("plugin 'chatty': ") and len(e) <= 200 for e in errors), errors
    assert len(chatty.content) < 1000
