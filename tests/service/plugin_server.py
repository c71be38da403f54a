"""A tiny reward-plugin server for the service tests (run as a script: ``--port P``).

Plugins: ``length*`` (score = len(response)), ``half`` (per-item error on an empty response),
``slow`` (sleeps ``SLOW_S`` first), ``garbage`` (``scores`` is not a list), ``short`` (one score
too few), ``flaky`` (503 on every other call), ``bad`` (always 400). ``GET /calls`` counts calls.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException

SLOW_S = 3.0
app = FastAPI()
calls: Counter[str] = Counter()


@app.get("/calls")
async def get_calls() -> dict[str, int]:
    """How many score calls each plugin got."""
    return dict(calls)


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
        raise HTTPException(400, "bad plugin rejects everything")
    raise HTTPException(404, f"no plugin {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
