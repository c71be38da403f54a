"""`rlsys serve` through the console entry point: the service comes up on the given port,
answers /healthz (reporting an unreachable Redis rather than failing), scores a built-in,
and enforces the bearer token from RLSYS_API_TOKEN."""

import os
import socket
import subprocess
import sys
import time

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rlsys_serve_cli():
    port, dead_redis = _free_port(), _free_port()
    env = {**os.environ, "RLSYS_API_TOKEN": "s3cret"}
    proc = subprocess.Popen([sys.executable, "-m", "rlsys.cli", "serve", "--port", str(port),
                             "--redis-url", f"redis://127.0.0.1:{dead_redis}/0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.3)
        assert health.status_code == 200 and health.json()["redis"] == "down"
        body = {"items": [{"prompt": "p", "response": "so \\boxed{4}", "reference": "4"},
                          {"prompt": "p", "response": "no box", "reference": "4"}]}
        assert httpx.post(f"{url}/v1/rewards/format/score", json=body).status_code == 401
        ok = httpx.post(f"{url}/v1/rewards/format/score", json=body,
                        headers={"Authorization": "Bearer s3cret"}, timeout=30)
        assert ok.status_code == 200, ok.text
        assert ok.json()["scores"] == [1.0, 0.0]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
