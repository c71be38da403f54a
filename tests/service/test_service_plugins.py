"""Remote plugins through the service: register -> score -> unregister, misbehaving plugins,
URL validation, built-in name clashes, two replicas sharing one Redis registry, and
``RemoteReward`` used as a client of the live service."""

from __future__ import annotations

import httpx
import pytest
from conftest import Service

from rewards.base import RewardItem
from rewards.remote import RemoteReward


def _items(*responses: str) -> dict:
    return {"items": [{"prompt": "p", "response": r} for r in responses]}


def _register(client: httpx.Client, name: str, url: str, **extra: object) -> httpx.Response:
    return client.post("/v1/plugins", json={"name": name, "url": url, **extra})


def test_register_score_unregister(service: Service, plugin_url: str) -> None:
    with service.client() as client:
        assert _register(client, "length", plugin_url).status_code == 201
        assert _register(client, "length", plugin_url).status_code == 200  # replaced
        listed = {r["name"]: r for r in client.get("/v1/rewards").json()["rewards"]}
        assert listed["length"]["kind"] == "plugin" and listed["length"]["url"] == plugin_url
        r = client.post("/v1/rewards/length/score", json=_items("abc", ""))
        assert r.status_code == 200 and r.json() == {"scores": [3.0, 0.0], "errors": [None] * 2}
        assert client.delete("/v1/plugins/length").status_code == 200
        assert client.delete("/v1/plugins/length").status_code == 404
        assert client.post("/v1/rewards/length/score", json=_items("abc")).status_code == 404


def test_plugin_per_item_errors_pass_through(service: Service, plugin_url: str) -> None:
    with service.client() as client:
        assert _register(client, "half", plugin_url).status_code == 201
        body = client.post("/v1/rewards/half/score", json=_items("ab", "")).json()
    assert body["scores"] == [2.0, None]
    assert body["errors"][0] is None and "empty response" in body["errors"][1]


@pytest.mark.parametrize(("plugin", "message"), [
    ("slow", "plugin 'slow' timed out after 0.5 s"),
    ("garbage", "plugin 'garbage' returned an invalid body"),
    ("short", "plugin 'short' returned an invalid body"),
    ("bad", "plugin 'bad' failed: HTTP 400"),
    ("redirect", "plugin 'redirect' failed: HTTP 307"),  # redirects are not followed
])
def test_misbehaving_plugins_give_short_per_item_errors(service: Service, plugin_url: str,
                                                        plugin: str, message: str) -> None:
    """The error names the plugin and the status, nothing of the plugin's body."""
    with service.client() as client:
        # 200: other tests on the shared service may have registered it already
        assert _register(client, plugin, plugin_url, timeout_s=0.5).status_code in (200, 201)
        r = client.post(f"/v1/rewards/{plugin}/score", json=_items("a", "b"))
    assert r.status_code == 200, r.text
    assert r.json() == {"scores": [None, None], "errors": [message, message]}


def test_unreachable_plugin_gives_per_item_errors(service: Service) -> None:
    from conftest import free_port

    with service.client() as client:
        url = f"http://127.0.0.1:{free_port()}"
        assert _register(client, "gone", url, timeout_s=1).status_code == 201
        body = client.post("/v1/rewards/gone/score", json=_items("a")).json()
    assert body == {"scores": [None], "errors": ["plugin 'gone' unreachable (ConnectError)"]}


@pytest.mark.parametrize("url", [
    "ftp://example.com", "http://user:pw@example.com", "http://", "example.com",
    "http://h:99999", "javascript:alert(1)", "http://h/x?a=1",
])
def test_plugin_url_validation_is_422(service: Service, url: str) -> None:
    with service.client() as client:
        r = _register(client, "bad-url", url)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "url"]


def test_builtin_name_clash_is_409(service: Service, plugin_url: str) -> None:
    with service.client() as client:
        r = _register(client, "math", plugin_url)
    assert r.status_code == 409 and "built-in" in r.json()["detail"]


def test_two_replicas_share_the_registry(redis_server, start_service, plugin_url: str) -> None:
    a = start_service(redis_server.url)
    b = start_service(redis_server.url)
    with a.client() as ca, b.client() as cb:
        assert _register(ca, "length-shared", plugin_url).status_code == 201
        r = cb.post("/v1/rewards/length-shared/score", json=_items("four"))
        assert r.status_code == 200 and r.json()["scores"] == [4.0]
        assert cb.delete("/v1/plugins/length-shared").status_code == 200
        assert ca.post("/v1/rewards/length-shared/score", json=_items("x")).status_code == 404


def test_remote_reward_client_against_the_service(service: Service, plugin_url: str) -> None:
    reward = RemoteReward(service.url, name="format", token=service.token, batch_size=2)
    items = [RewardItem("p", "\\boxed{1}"), RewardItem("p", "none"), RewardItem("p", "\\boxed{x}")]
    assert [s.value for s in reward.score(items)] == [1.0, 0.0, 1.0]
    unauthorised = RemoteReward(service.url, name="format", token="wrong", retries=0)
    [score] = unauthorised.score(items[:1])
    assert score.value is None and "HTTP 401" in score.error
    assert f"{service.url}/v1/rewards/format/score" in score.error
    with service.client() as client:  # 503 then 200: the service proxies one quick retry
        assert _register(client, "flaky", plugin_url).status_code == 201
    flaky = RemoteReward(service.url, name="flaky", token=service.token)
    assert [s.value for s in flaky.score(items[:2])] == [2.0, 2.0]
