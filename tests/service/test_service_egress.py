"""The SSRF guard of plugin URLs: the address policy on real name resolution (``getaddrinfo``
reads decimal/hex/octal IPv4 spellings and ``localhost``), refusal at registration over real
HTTP, refusal at call time (a replica with the default policy sharing the registry, and a
resolver that changes its answer between check and call), and the call going to the address
that was checked."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from rewards.base import RewardItem
from rewards.service.egress import EgressPolicy, EgressRefused, blocked_reason
from rewards.service.plugins import PluginCaller

REFUSED_HOSTS = [
    ("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"),
    ("[::ffff:169.254.169.254]", "link-local"), ("10.1.2.3", "private"),
    ("192.168.0.7", "private"), ("172.16.5.4", "private"), ("100.64.0.1", "not a public"),
    ("2130706433", "loopback"), ("0x7f000001", "loopback"), ("0177.0.0.1", "loopback"),
    ("127.1", "loopback"), ("localhost", "loopback"), ("[::1]", "loopback"),
    ("0.0.0.0", "unspecified"), ("[64:ff9b::a9fe:a9fe]", "link-local"),
    ("[2002:7f00:1::1]", "loopback"), ("224.0.0.1", "multicast"),
]


def _resolve(policy: EgressPolicy, host: str) -> list[str]:
    return asyncio.run(policy.resolve(host, 80))


@pytest.mark.parametrize(("host", "kind"), REFUSED_HOSTS)
def test_default_policy_refuses_non_public_hosts(host: str, kind: str) -> None:
    with pytest.raises(EgressRefused, match=kind) as info:
        _resolve(EgressPolicy(), host)
    assert "--allow-plugin-host" in str(info.value)


@pytest.mark.parametrize("host", ["93.184.216.34", "[2606:4700:4700::1111]", "8.8.8.8"])
def test_default_policy_allows_public_addresses(host: str) -> None:
    assert _resolve(EgressPolicy(), host) == [host.strip("[]")]
    assert blocked_reason(__import__("ipaddress").ip_address(host.strip("[]"))) is None


def test_allow_list_opens_only_what_it_names() -> None:
    policy = EgressPolicy.from_entries(["127.0.0.1", "10.0.0.0/8"])
    assert _resolve(policy, "127.0.0.1") == ["127.0.0.1"]
    assert _resolve(policy, "2130706433") == ["127.0.0.1"]  # same address, other spelling
    assert _resolve(policy, "10.9.8.7") == ["10.9.8.7"]
    for host in ("127.0.0.2", "169.254.169.254", "192.168.0.1", "[::1]"):
        with pytest.raises(EgressRefused):
            _resolve(policy, host)
    by_name = EgressPolicy.from_entries(["LocalHost."])
    assert _resolve(by_name, "localhost") == ["127.0.0.1"]
    with pytest.raises(EgressRefused, match="loopback"):
        _resolve(by_name, "127.0.0.1")  # the name was allowed, not its address
    with pytest.raises(EgressRefused, match="does not resolve"):
        _resolve(policy, "no-such-host.invalid")


def _register(client: httpx.Client, name: str, url: str) -> httpx.Response:
    return client.post("/v1/plugins", json={"name": name, "url": url})


def test_registration_refuses_non_public_hosts(redis_server, start_service) -> None:
    svc = start_service(redis_server.url, loopback_plugins=False)
    with svc.client() as client:
        for host, kind in REFUSED_HOSTS:
            r = _register(client, "ssrf", f"http://{host}:6379")
            assert r.status_code == 422, (host, r.text)
            [error] = r.json()["detail"]
            assert error["loc"] == ["body", "url"] and kind in error["msg"], (host, error)
        assert "ssrf" not in {r["name"] for r in client.get("/v1/rewards").json()["rewards"]}


def test_call_time_check_refuses_what_another_policy_registered(
        redis_server, start_service, plugin_url: str) -> None:
    """A registry entry made under a looser policy (another replica, or a name that resolved
    elsewhere at registration) is checked again when called."""
    loose = start_service(redis_server.url)  # allows 127.0.0.1
    strict = start_service(redis_server.url, loopback_plugins=False)
    name = "length-call-time"
    with loose.client() as lc, strict.client() as sc:
        assert _register(lc, name, plugin_url).status_code == 201
        before = httpx.get(f"{plugin_url}/calls").json().get(name, 0)
        r = sc.post(f"/v1/rewards/{name}/score", json={"items": [{"prompt": "p",
                                                                   "response": "abc"}]})
        assert r.status_code == 200
        assert r.json() == {"scores": [None], "errors": [
            f"plugin {name!r} refused: its host is not an allowed destination"]}
        assert httpx.get(f"{plugin_url}/calls").json().get(name, 0) == before
        r = lc.post(f"/v1/rewards/{name}/score", json={"items": [{"prompt": "p",
                                                                   "response": "abc"}]})
        assert r.json()["scores"] == [3.0]
        assert httpx.get(f"{plugin_url}/calls").json()[name] == before + 1
        assert lc.delete(f"/v1/plugins/{name}").status_code == 200


def test_allow_listed_host_name_registers_and_scores(redis_server, start_service,
                                                     plugin_url: str) -> None:
    svc = start_service(redis_server.url, "--allow-plugin-host", "localhost",
                        loopback_plugins=False)
    url = plugin_url.replace("127.0.0.1", "localhost")
    with svc.client() as client:
        assert _register(client, "length-localhost", url).status_code == 201
        r = client.post("/v1/rewards/length-localhost/score",
                        json={"items": [{"prompt": "p", "response": "four"}]})
        assert r.json()["scores"] == [4.0]
        assert _register(client, "loopback-ip", plugin_url).status_code == 422


class Rebinder:
    """A resolver whose answers for a name change over time, like a rebinding DNS server."""

    def __init__(self, *answers: str) -> None:
        self.answers, self.asked = list(answers), 0

    async def __call__(self, host: str, port: int) -> list[str]:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return [answer]


def _caller(policy: EgressPolicy) -> PluginCaller:
    return PluginCaller(policy, concurrency=4, max_response_bytes=1 << 20, batch_size=64)


def test_rebinding_between_registration_and_call_is_refused(plugin_url: str) -> None:
    port = httpx.URL(plugin_url).port
    rebinder = Rebinder("93.184.216.34", "127.0.0.1")
    caller = _caller(EgressPolicy(resolver=rebinder))

    async def scenario() -> list:
        await caller.check_url(f"http://plugin.example:{port}")  # public at registration
        try:
            return await caller.score("length", f"http://plugin.example:{port}", 5.0,
                                      [RewardItem("p", "abc")])
        finally:
            await caller.close()

    before = httpx.get(f"{plugin_url}/calls").json().get("length", 0)
    [score] = asyncio.run(scenario())
    assert rebinder.asked == 2 and score.value is None and "refused" in score.error
    assert httpx.get(f"{plugin_url}/calls").json().get("length", 0) == before


def test_the_call_goes_to_the_checked_address(plugin_url: str) -> None:
    """``plugin.example`` exists only in our resolver: the call reaches the plugin server only
    because the client connects to the address the policy checked, not to a fresh lookup."""
    port = httpx.URL(plugin_url).port
    resolver = Rebinder("127.0.0.1")
    caller = _caller(EgressPolicy.from_entries(["127.0.0.1"], resolver=resolver))

    async def scenario() -> list:
        try:
            return await caller.score("length", f"http://plugin.example:{port}", 5.0,
                                      [RewardItem("p", "abcd")])
        finally:
            await caller.close()

    [score] = asyncio.run(scenario())
    assert score.value == 4.0 and resolver.asked == 1


def test_the_services_redis_is_never_a_plugin(redis_server, start_service) -> None:
    """Even with loopback allowed (local development), the Redis endpoint stays refused."""
    svc = start_service(redis_server.url)
    port = redis_server.port
    with svc.client() as client:
        for host in ("127.0.0.1", "2130706433"):
            r = _register(client, "redis-ssrf", f"http://{host}:{port}")
            assert r.status_code == 422 and "own Redis" in r.json()["detail"][0]["msg"]
        assert _register(client, "not-redis", f"http://127.0.0.1:{port + 1}").status_code \
            == 201
        assert client.delete("/v1/plugins/not-redis").status_code == 200
