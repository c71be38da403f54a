"""Redis state shared by every replica: plugin registry, score cache, rate-limit windows.

* plugins: one hash ``rlsys:plugins`` (name -> JSON spec), read on every request so a plugin
  registered on one replica is usable on all of them at once;
* cache: ``rlsys:score:<sha256>`` -> JSON float, with a TTL;
* rate limits: fixed one-minute windows, ``INCR`` + ``EXPIRE`` on ``rlsys:rate:<who>:<window>``.

Redis being down never stalls the service: sockets time out quickly, and after a failure calls
fail fast (``StoreUnavailable``) for ``cooldown_s`` before Redis is tried again, so the service
recovers by itself once Redis is back. Callers decide what "down" means for them (the cache is
skipped, registry writes become 503). This module knows nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from redis import asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

PLUGINS_KEY = "rlsys:plugins"
CACHE_PREFIX = "rlsys:score:"
RATE_PREFIX = "rlsys:rate:"


class StoreUnavailable(RuntimeError):
    """Redis could not be reached (or is cooling down after a failure)."""


def cache_key(reward: str, version: str, prompt: str, response: str, reference: Any) -> str:
    """sha256 over the reward identity and the item, JSON-encoded canonically (ASCII escapes,
    so a string that is not valid Unicode, such as a lone surrogate, still has a key)."""
    blob = json.dumps([reward, version, prompt, response, reference], sort_keys=True,
                      ensure_ascii=True, separators=(",", ":"), default=str)
    return CACHE_PREFIX + hashlib.sha256(blob.encode()).hexdigest()


class RedisStore:
    """Async access to the shared state; every method raises ``StoreUnavailable`` on failure."""

    def __init__(self, url: str, timeout_s: float = 0.5, cooldown_s: float = 1.0) -> None:
        self.url = url
        self.cooldown_s = cooldown_s
        self._down_until = 0.0
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            # one immediate retry on a fresh connection: a pooled socket may predate a restart
            retry=Retry(NoBackoff(), 1), health_check_interval=5, decode_responses=True)

    async def close(self) -> None:
        """Release the connection pool."""
        await self._redis.aclose()

    async def _call(self, coro_fn: Any, *args: Any) -> Any:
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(f"Redis at {self.url} is unavailable (retrying shortly)")
        try:
            result = await coro_fn(*args)
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self.cooldown_s
            raise StoreUnavailable(f"Redis at {self.url} is unavailable: "
                                   f"{type(exc).__name__}") from exc
        self._down_until = 0.0
        return result

    async def ping(self) -> bool:
        """True when Redis answers now (ignores the cool-down, so health checks see recovery)."""
        self._down_until = 0.0
        try:
            await self._call(self._redis.ping)
        except StoreUnavailable:
            return False
        return True

    # -- plugin registry -------------------------------------------------------------------
    async def plugins(self) -> dict[str, dict[str, Any]]:
        """Every registered plugin: name -> spec."""
        raw = await self._call(self._redis.hgetall, PLUGINS_KEY)
        return {name: json.loads(spec) for name, spec in raw.items()}

    async def plugin(self, name: str) -> dict[str, Any] | None:
        """The spec registered under ``name``, or None."""
        raw = await self._call(self._redis.hget, PLUGINS_KEY, name)
        return None if raw is None else json.loads(raw)

    async def put_plugin(self, name: str, spec: dict[str, Any]) -> bool:
        """Register or replace ``name``; True when it is new."""
        return bool(await self._call(self._redis.hset, PLUGINS_KEY, name, json.dumps(spec)))

    async def delete_plugin(self, name: str) -> bool:
        """Remove ``name``; True when it existed."""
        return bool(await self._call(self._redis.hdel, PLUGINS_KEY, name))

    # -- score cache -----------------------------------------------------------------------
    async def cache_get(self, keys: Sequence[str]) -> list[float | None]:
        """Cached scores for ``keys`` (None where absent)."""
        if not keys:
            return []
        raw = await self._call(self._redis.mget, list(keys))
        return [None if v is None else float(v) for v in raw]

    async def cache_put(self, values: dict[str, float], ttl_s: int) -> None:
        """Store scores with a TTL, in one round trip."""
        if not values or ttl_s <= 0:
            return

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in values.items():
                    pipe.set(key, repr(float(value)), ex=ttl_s)
                await pipe.execute()

        await self._call(write)

    # -- rate limiting ---------------------------------------------------------------------
    async def hit(self, who: str, limit: int, window_s: int = 60) -> tuple[bool, int]:
        """Count one request for ``who``; (allowed, seconds until the window resets)."""
        now = time.time()
        window = int(now // window_s)
        key = f"{RATE_PREFIX}{who}:{window}"

        async def incr() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, window_s + 1, nx=True)
                count, _ = await pipe.execute()
            return int(count)

        count = await self._call(incr)
        retry_after = max(1, int((window + 1) * window_s - now + 0.999))
        return count <= limit, retry_after
