"""Scoring behind ``POST /v1/rewards/{name}/score``: built-ins in-process, plugins by proxy.

Built-in rewards (``math``, ``code``, ``format``) are built once per app and graded in the
threadpool through ``FairGrader`` (one item per job for ``math`` and ``code``, so requests share
the workers fairly), within the request's grading budget: items not graded by then get a
"timed out" error. Successful scores are cached in Redis by ``cache_key``; errors and
load-dependent verdicts (a sandbox or math-checker timeout) are not cached, since they may come
out differently on a less loaded machine. When Redis is down the cache is simply skipped.
Registered plugins are called through ``PluginCaller`` (async, with its own concurrency pool);
their failures become per-item errors, and their scores are not cached (a plugin may change
behind its URL). This module knows nothing of HTTP status codes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from rewards import get_reward
from rewards.base import Reward, RewardItem, Score
from rewards.service.grading import TIMED_OUT, FairGrader
from rewards.service.metrics import ServiceMetrics
from rewards.service.plugins import PluginCaller
from rewards.service.store import RedisStore, StoreUnavailable, cache_key

BUILTINS = ("math", "code", "format")
#: verdicts that may flip on a less loaded machine: scored, but never cached.
_LOAD_DEPENDENT = frozenset({"timeout"})
#: rewards cheap enough to grade a whole request in one job.
_CHEAP = frozenset({"format"})


def safe_score(reward: Reward, items: Sequence[RewardItem]) -> list[Score]:
    """``reward.score(items)``, turning a crash or a wrong-length answer into per-item errors."""
    name = getattr(reward, "name", "reward")
    try:
        scores = list(reward.score(items))
    except Exception as exc:  # noqa: BLE001 - a failing reward must not become a 500
        return [Score(None, error=f"reward {name!r} failed: {type(exc).__name__}: {exc}")
                for _ in items]
    if len(scores) != len(items):
        msg = f"reward {name!r} returned {len(scores)} scores for {len(items)} items"
        return [Score(None, error=msg) for _ in items]
    return scores


class Scorer:
    """Holds the built-in reward instances, the grader and the plugin caller of one app."""

    def __init__(self, metrics: ServiceMetrics, store: Callable[[], RedisStore | None],
                 plugins: Callable[[], PluginCaller], *, cache_ttl_s: int,
                 plugin_timeout_s: float, grading_budget_s: float,
                 grading_concurrency: int) -> None:
        self.metrics, self.store, self.plugins = metrics, store, plugins
        self.cache_ttl_s, self.plugin_timeout_s = cache_ttl_s, plugin_timeout_s
        self.grading_budget_s = grading_budget_s
        self.grader = FairGrader(grading_concurrency)
        self._builtins: dict[str, Reward] = {}
        self._lock = threading.Lock()

    def builtin(self, name: str) -> Reward:
        """The app's instance of built-in ``name`` (built on first use)."""
        with self._lock:
            if name not in self._builtins:
                self._builtins[name] = get_reward(name)
            return self._builtins[name]

    async def score_builtin(self, name: str, items: Sequence[RewardItem]) -> list[Score]:
        """Score with a built-in, using the Redis cache when it is reachable."""
        try:
            # Building may import heavy modules (sympy): do it off the event loop, once.
            reward = self._builtins.get(name) or await run_in_threadpool(self.builtin, name)
        except Exception as exc:  # noqa: BLE001 - e.g. a missing optional dependency
            msg = f"reward {name!r} is unavailable: {type(exc).__name__}: {exc}"
            return [Score(None, error=msg) for _ in items]
        version = str(getattr(reward, "version", "1"))
        keys = [cache_key(name, version, it.prompt, it.response, it.reference) for it in items]
        cached = await self._cache_get(keys)
        misses = [i for i, value in enumerate(cached) if value is None]
        self.metrics.cache_hits.labels(name).inc(len(items) - len(misses))
        self.metrics.cache_misses.labels(name).inc(len(misses))
        fresh = await self._grade(reward, name, [items[i] for i in misses])
        out: list[Score] = [Score(value) if value is not None else Score(None)
                            for value in cached]
        to_cache: dict[str, float] = {}
        for i, score in zip(misses, fresh, strict=True):
            out[i] = score
            if score.ok and score.info.get("status") not in _LOAD_DEPENDENT:
                to_cache[keys[i]] = float(score.value)  # type: ignore[arg-type]
            if name == "code":
                status = score.info.get("status") if score.ok else "error"
                self.metrics.sandbox_verdicts.labels(str(status or "unknown")).inc()
        await self._cache_put(to_cache)
        self._count(name, out)
        return out

    async def score_plugin(self, name: str, spec: dict[str, Any],
                           items: Sequence[RewardItem]) -> list[Score]:
        """Proxy to a registered plugin; every failure is a short per-item error."""
        deadline = min(float(spec.get("timeout_s") or self.plugin_timeout_s),
                       self.plugin_timeout_s)
        out = await self.plugins().score(name, spec["url"], deadline, items)
        self._count(name, out)
        return out

    async def _grade(self, reward: Reward, name: str,
                     items: Sequence[RewardItem]) -> list[Score]:
        """Grade through the fair scheduler; items past the budget are reported timed out."""
        size = max(1, len(items)) if name in _CHEAP else 1
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        results = await self.grader.run(lambda chunk: safe_score(reward, chunk), chunks,
                                        self.grading_budget_s)
        out: list[Score] = []
        late = (f"timed out: not graded within the request's grading budget of "
                f"{self.grading_budget_s:g} s (grading_budget_s)")
        for chunk, result in zip(chunks, results, strict=True):
            if result is TIMED_OUT:
                self.metrics.grading_timeouts.labels(name).inc(len(chunk))
                out.extend(Score(None, error=late) for _ in chunk)
            else:
                out.extend(result)
        return out

    async def _cache_get(self, keys: list[str]) -> list[float | None]:
        store = self.store()
        if store is None or self.cache_ttl_s <= 0:
            return [None] * len(keys)
        try:
            return await store.cache_get(keys)
        except StoreUnavailable:
            return [None] * len(keys)

    async def _cache_put(self, values: dict[str, float]) -> None:
        store = self.store()
        if store is None or self.cache_ttl_s <= 0 or not values:
            return
        try:
            await store.cache_put(values, self.cache_ttl_s)
        except StoreUnavailable:
            pass  # the cache is an optimisation; scores are already computed

    def _count(self, name: str, scores: Sequence[Score]) -> None:
        ok = sum(1 for s in scores if s.ok)
        self.metrics.items.labels(name, "ok").inc(ok)
        self.metrics.items.labels(name, "error").inc(len(scores) - ok)
