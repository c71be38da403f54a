"""ASGI middlewares guarding the reward service, outermost first:

``MetricsMiddleware`` (counts and times every request by route template), ``AuthMiddleware``
(bearer token on ``/v1/*`` and ``/metrics``, the scheme name case-insensitive as RFC 7235 says,
the credentials compared with ``hmac.compare_digest``; ``/healthz`` and the docs stay open),
``RateLimitMiddleware`` (fixed window per token and client address in Redis; fails open when
Redis is down) and ``BodyLimitMiddleware`` (reads the body up to ``max_bytes`` whether or
not a Content-Length was sent, 413 beyond). They answer with small JSON bodies and never leak
internals. Route handlers live in ``rewards.service.app``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewards.service.metrics import ServiceMetrics
from rewards.service.store import RedisStore, StoreUnavailable


async def send_json(send: Send, status: int, detail: str,
                    headers: dict[str, str] | None = None) -> None:
    """Send a complete ``{"detail": ...}`` JSON response."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def is_guarded(path: str) -> bool:
    """Paths that need the token (and count against the rate limit, for ``/v1/``)."""
    return path.startswith("/v1/") or path in ("/v1", "/metrics")


def token_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization`` header against ``Bearer <token>`` (the
    scheme in any case, RFC 7235)."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    presented = credentials.strip() if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(presented.encode("latin-1"), token.encode("utf-8"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class MetricsMiddleware:
    """Records ``rlsys_http_requests`` and the latency histogram by route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics,
                 routes: Callable[[], list[Any]]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def _route(self, scope: Scope) -> str:
        for route in self.routes():
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "other")
        return "unmatched"  # bounded label set: never the raw path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, start, status = self._route(scope), time.perf_counter(), [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.latency.labels(scope["method"], route).observe(
                time.perf_counter() - start)


class AuthMiddleware:
    """401 on guarded paths unless ``Authorization: Bearer <token>``; no-op without a token."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self.token and is_guarded(scope["path"])
                and not token_matches(_header(scope, b"authorization"), self.token)):
            await send_json(send, 401, "missing or invalid bearer token",
                            {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


class RateLimitMiddleware:
    """429 with ``Retry-After`` once a caller (token and client address) exceeds
    ``limit_per_min`` on ``/v1/*``."""

    def __init__(self, app: ASGIApp, limit_per_min: int,
                 store: Callable[[], RedisStore | None]) -> None:
        self.app, self.limit, self.store = app, limit_per_min, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = self.store()
        if (scope["type"] == "http" and self.limit > 0 and store is not None
                and scope["path"].startswith("/v1/")):
            auth = _header(scope, b"authorization")
            client = (scope.get("client") or ("unknown", 0))[0]
            key = f"{auth or ''}\n{client}".encode("latin-1", "replace")
            who = hashlib.sha256(key).hexdigest()[:32]
            try:
                allowed, retry_after = await store.hit(who, self.limit)
            except StoreUnavailable:
                allowed, retry_after = True, 0  # fail open: Redis down must not stop scoring
            if not allowed:
                await send_json(send, 429, f"rate limit of {self.limit} requests/min exceeded; "
                                           f"retry in {retry_after} s",
                                {"Retry-After": str(retry_after)})
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Buffers the request body up to ``max_bytes`` (413 beyond), then replays it to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"request body exceeds the limit of {self.max_bytes} bytes (max_body_bytes)"
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json(send, 413, too_big)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:  # chunked bodies have no Content-Length to trust
                await send_json(send, 413, too_big)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
