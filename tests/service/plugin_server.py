"""A tiny reward-plugin server for the service tests (run as a script: ``--port P``).

Plugins: ``length*`` (score = len(response)), ``half`` (per-item error on an empty response),
``slow`` (sleeps ``SLOW_S`` first), ``garbage`` (``scores`` is not a list), ``short`` (one score
too few), ``flaky`` (503 on every other call), ``bad`` (always 400, with a secret-looking
body), ``chatty`` (a 1 MB per-item error), ``trickle*`` (200, then one byte every
``TRICKLE_S`` for a minute), ``huge`` (an endless stream of bytes), ``redirect`` (307 to
``length``). ``GET /calls`` counts score calls; ``GET /streams`` counts, per plugin, the
streams opened (``NAME:opened``), cut before their end because the client hung up
(``NAME:cut``) and the most open at once (``NAME:max_open``).
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import RedirectResponse, StreamingResponse

SLOW_S = 3.0
TRICKLE_S = 0.5
SECRET = "internal-secret-7c1e"
app = FastAPI()
calls: Counter[str] = Counter()
streams: Counter[str] = Counter()


@app.get("/calls")
async def get_calls() -> dict[str, int]:
    """How many score calls each plugin got."""
    return dict(calls)


@app.get("/streams")
async def get_streams() -> dict[str, int]:
    """Streams opened, cut off by the client, and the most open at once."""
    return dict(streams)


async def _stream(name: str, chunk: bytes, pause_s: float,
                  total_s: float) -> AsyncIterator[bytes]:
    streams[f"{name}:opened"] += 1
    streams[f"{name}:open"] += 1
    streams[f"{name}:max_open"] = max(streams[f"{name}:max_open"], streams[f"{name}:open"])
    finished = False
    try:
        yield b'{"scores": ['
        for _ in range(int(total_s / max(pause_s, 1e-3))):
            await asyncio.sleep(pause_s)
            yield chunk
        finished = True
    finally:
        streams[f"{name}:open"] -= 1
        if not finished:
            streams[f"{name}:cut"] += 1


@app.post("/v1/rewards/{name}/score")
async def score(name: str, body: dict[str, Any]) -> Any:
    """Score according to the plugin ``name`` (see the module docstring)."""
    calls[name] += 1
    items = body["items"]
    if name.startswith("length"):
        return {"scores": [float(len(it["response"])) for it in items]}
    if name == "half":
        return {"scores": [float(len(it["response"])) if it["response"] else None
                           for it in items],
                "errors": [None if it["response"] else "empty response" for it in items]}
    if name == "slow":
        await asyncio.sleep(SLOW_S)
        return {"scores": [1.0 for _ in items]}
    if name == "garbage":
        return {"scores": "nope"}
    if name == "short":
        return {"scores": [1.0 for _ in items[1:]]}
    if name == "flaky":
        if calls[name] % 2 == 1:
            raise HTTPException(503, "flaky says try again")
        return {"scores": [2.0 for _ in items]}
    if name == "bad":
        raise HTTPException(400, f"bad plugin rejects everything; db password {SECRET}")
    if name == "chatty":
        return {"scores": [None for _ in items], "errors": [SECRET * 50_000 for _ in items]}
    if name.startswith("trickle"):
        return StreamingResponse(_stream(name, b" ", TRICKLE_S, 60.0),
                                 media_type="application/json")
    if name == "huge":
        return StreamingResponse(_stream(name, b"0," * 32_768, 0.0, 30.0),
                                 media_type="application/json")
    if name == "redirect":
        return RedirectResponse("/v1/rewards/length/score", status_code=307)
    raise HTTPException(404, f"no plugin {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
