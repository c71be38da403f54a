"""Fixtures for the reward-service tests: a real redis-server, real uvicorn processes of the
service and of a tiny plugin server, all on free loopback ports and torn down at the end.

The plugin server listens on loopback, which the service refuses by default (SSRF guard), so
services started here allow ``127.0.0.1`` explicitly unless a test asks for the default policy
(``loopback_plugins=False``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-123"


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server for {url} did not come up in {timeout_s}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisServer:
    """A foreground redis-server child process that can be killed and restarted on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self._dbs_used = 0
        self.start()

    def own_db_url(self) -> str:
        """URL of a Redis database no other caller gets (1..15): for tests whose state, such
        as rate-limit windows keyed by token and client, must not be shared."""
        self._dbs_used += 1
        assert self._dbs_used < 16, "redis-server has 16 databases"
        return f"redis://127.0.0.1:{self.port}/{self._dbs_used}"

    def start(self) -> None:
        """Start (or restart) on the same port and wait until it answers PING."""
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """Kill the server (SIGKILL: no clean shutdown) and wait for it to exit."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """Stop the server if it runs."""
        if self.proc is not None:
            _stop(self.proc)


class Service:
    """One uvicorn process of ``python -m rewards.service`` (``--insecure-no-auth`` when
    ``token`` is None; loopback plugins allowed unless ``loopback_plugins`` is False)."""

    def __init__(self, redis_url: str, token: str | None = TOKEN, *args: str,
                 loopback_plugins: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        env = {k: v for k, v in os.environ.items()
               if k not in ("RLSYS_API_TOKEN", "RLSYS_ALLOW_PLUGIN_HOSTS",
                            "RLSYS_RATE_LIMIT_PER_MIN")}
        if token:
            env["RLSYS_API_TOKEN"] = token
        extra = [] if token else ["--insecure-no-auth"]
        extra += ["--allow-plugin-host", "127.0.0.1"] if loopback_plugins else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rewards.service", "--port", str(self.port),
             "--redis-url", redis_url, "--log-level", "warning", *extra, *args],
            cwd=ROOT, env=env)
        _wait_http(f"{self.url}/healthz", self.proc)

    def client(self, token: str | None = "default") -> httpx.Client:
        """An httpx client for this service, authorised with its token by default."""
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the session (the fault test uses its own)."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service(redis_server: RedisServer) -> Iterator[Service]:
    """The service with a token, a 64 KiB body limit and a batch limit of 16."""
    svc = Service(redis_server.url, TOKEN, "--max-body-bytes", "65536", "--max-batch", "16")
    yield svc
    _stop(svc.proc)


@pytest.fixture()
def start_service() -> Iterator[Callable[..., Service]]:
    """Factory for extra service processes, stopped after the test."""
    started: list[Service] = []

    def start(redis_url: str, *args: str, token: str | None = TOKEN,
              loopback_plugins: bool = True) -> Service:
        started.append(Service(redis_url, token, *args, loopback_plugins=loopback_plugins))
        return started[-1]

    yield start
    for svc in started:
        _stop(svc.proc)


@pytest.fixture(scope="session")
def plugin_url() -> Iterator[str]:
    """Base URL of the tiny plugin server (tests/service/plugin_server.py)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("plugin_server.py")),
                             "--port", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/calls", proc)
    yield url
    _stop(proc)
