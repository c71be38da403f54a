"""Throughput and latency of the reward service: math scoring, cold vs warm cache.

Starts a private redis-server and one uvicorn worker of ``python -m rewards.service`` on
loopback, then 32 concurrent async clients each send ``--requests`` score requests of 8 math
items. A cold pass uses items never seen before (every item is graded); the warm pass after it
repeats the same requests (every item is a cache hit); ``--rounds`` such pairs alternate.
Prints a table and writes ``bench/service_results.md``. A benchmark, not a test: nothing is
asserted.

    .venv/bin/python bench/bench_service.py [--clients 32] [--requests 8] [--batch 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"  # the service refuses to start without one
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _item(client: int, request: int, slot: int, salt: int) -> dict:
    """A distinct, non-trivial math item: a fraction answer checked against a decimal."""
    n = 1 + client * 10_000 + request * 100 + slot + salt
    answer = f"\\frac{{{n}}}{{4}}" if slot % 2 else f"{n} + \\sqrt{{4}}"
    reference = f"{n / 4}" if slot % 2 else f"{n + 2}"
    return {"prompt": f"Compute item {n}.", "response": f"So the answer is \\boxed{{{answer}}}.",
            "reference": reference}


async def _client(http: httpx.AsyncClient, url: str, client: int, args: argparse.Namespace,
                  salt: int, latencies: list[float]) -> None:
    for request in range(args.requests):
        body = {"items": [_item(client, request, s, salt) for s in range(args.batch)]}
        start = time.perf_counter()
        r = await http.post(url, json=body)
        latencies.append(time.perf_counter() - start)
        r.raise_for_status()
        scores = r.json()["scores"]
        if any(s != 1.0 for s in scores):
            raise RuntimeError(f"unexpected scores {scores} / {r.json()['errors']}")


async def _pass(base: str, args: argparse.Namespace, salt: int) -> tuple[list[float], float]:
    """One pass: (per-request latencies, wall seconds)."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300.0,
                                 headers=AUTH) as http:
        start = time.perf_counter()
        await asyncio.gather(*(_client(http, "/v1/rewards/math/score", c, args, salt, latencies)
                               for c in range(args.clients)))
        return latencies, time.perf_counter() - start


def _cold_warm(base: str, args: argparse.Namespace, salt: int) -> list[dict[str, float]]:
    """``args.rounds`` alternating cold/warm pass pairs (so load drift on a shared machine
    hits both alike); returns the aggregated [cold, warm] statistics."""
    runs: list[tuple[list[float], float, float]] = [([], 0.0, 0.0), ([], 0.0, 0.0)]
    for r in range(args.rounds):
        for kind in (0, 1):  # cold: new items; warm: the same items again
            server_before = _server_seconds(base)
            latencies, wall = asyncio.run(_pass(base, args, salt + r * 10_000_000))
            server = _server_seconds(base) - server_before
            runs[kind] = (runs[kind][0] + latencies, runs[kind][1] + wall, runs[kind][2] + server)
    out = []
    for latencies, wall, server in runs:
        q = statistics.quantiles(latencies, n=100)
        out.append({"requests": len(latencies), "wall_s": wall, "rps": len(latencies) / wall,
                    "items_s": len(latencies) * args.batch / wall, "p50_ms": 1e3 * q[49],
                    "p99_ms": 1e3 * q[98], "server_ms": 1e3 * server / len(latencies)})
    return out


def _server_seconds(base: str) -> float:
    """Total time the service spent in score requests (its latency histogram's sum)."""
    prefix = 'rlsys_http_request_duration_seconds_sum{method="POST",route="/v1/rewards/{name}'
    for line in httpx.get(f"{base}/metrics", headers=AUTH).text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def _cache_counts(base: str) -> str:
    text = httpx.get(f"{base}/metrics", headers=AUTH).text
    found = {}
    for line in text.splitlines():
        for kind in ("hits", "misses"):
            if line.startswith(f'rlsys_cache_{kind}_total{{reward="math"}}'):
                found[kind] = int(float(line.split()[-1]))
    return f"{found.get('hits', 0)} hits / {found.get('misses', 0)} misses"


def main() -> None:
    """Run both passes and report them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--batch", type=int, default=8, help="items per request")
    parser.add_argument("--rounds", type=int, default=3, help="alternating cold/warm pairs")
    parser.add_argument("--output", default=str(ROOT / "bench" / "service_results.md"))
    args = parser.parse_args()
    redis_port, port = _free_port(), _free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLSYS_")}
    env["RLSYS_API_TOKEN"] = TOKEN
    service = subprocess.Popen([sys.executable, "-m", "rewards.service", "--port", str(port),
                                "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                                "--log-level", "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{base}/healthz", service)
        warmup = argparse.Namespace(**{**vars(args), "clients": 1, "requests": 2})
        asyncio.run(_pass(base, warmup, salt=700_000_000))  # builds the math reward, not timed
        cold, warm = _cold_warm(base, args, salt=0)
        serial = argparse.Namespace(**{**vars(args), "clients": 1, "requests": 16})
        serial_cold, serial_warm = _cold_warm(base, serial, salt=100_000_000)
        cache = _cache_counts(base)
    finally:
        for proc in (service, redis):
            proc.terminate()
            proc.wait(10)
    _report(args, [(f"cold cache, {args.clients} clients", cold),
                   (f"warm cache, {args.clients} clients", warm),
                   ("cold cache, 1 client", serial_cold), ("warm cache, 1 client", serial_warm)],
            cache)


def _report(args: argparse.Namespace, rows: list[tuple[str, dict[str, float]]],
            cache: str) -> None:
    header = ("| pass | requests | wall s | req/s | items/s | p50 ms | p99 ms "
              "| server ms/request |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        lines.append(f"| {label} | {r['requests']} | {r['wall_s']:.2f} | {r['rps']:.1f} | "
                     f"{r['items_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['server_ms']:.1f} |")
    lines.append(f"\nService cache counters at the end (math, items): {cache}.")
    table = "\n".join(lines)
    print(table)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs (load average {load} at the end; "
               f"about 1 is this benchmark alone, more means other jobs shared the cores), "
               f"Python {platform.python_version()}")
    Path(args.output).write_text(
        "# Reward service benchmark\n\n"
        f"`bench/bench_service.py`: one uvicorn worker + redis-server on loopback; "
        f"{args.clients} concurrent httpx clients x {args.requests} requests x {args.batch} math "
        "items (fractions/radicals checked against decimals). Cold: every item graded; warm: "
        f"the same requests again, every item served from the Redis cache; "
        f"{args.rounds} alternating cold/warm rounds, aggregated. The 1-client rows send 16 "
        "requests per round one after another (no concurrency).\n\nMachine: "
        f"{machine}; run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n{table}\n\n"
        "Latencies are measured by the clients; *server ms/request* is the service's own "
        "mean time per score request (its Prometheus latency histogram), which excludes the "
        "load generator and waiting for a CPU before the request is read. The machine is "
        "shared (see the load average): compare rows of one run only. A warm request skips "
        "grading and costs only the HTTP/JSON/Redis path; when 32 clients get about as many "
        "requests/s as one, the single uvicorn process (and the load generator beside it) is "
        "CPU-bound: scale out with more replicas on the same Redis.\n")


if __name__ == "__main__":
    main()
