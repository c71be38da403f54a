"""The FastAPI app of the reward-plugin service: routes, error handlers, lifespan.

Routes: ``GET /v1/rewards``, ``POST /v1/rewards/{name}/score``, ``POST /v1/plugins``,
``DELETE /v1/plugins/{name}``, ``GET /healthz`` (always 200; says whether Redis is up),
``GET /metrics`` (Prometheus). Guards (auth, rate limit, body limit, metrics) are the ASGI
middlewares of ``rewards.service.guards``; scoring is ``rewards.service.scoring``; plugin URLs
must pass ``rewards.service.egress`` at registration (422 otherwise) and again at every call.
A score request that arrives from another rlsys service's plugin call (``x-rlsys-hop``) is not
proxied again to a plugin (508), so a plugin URL pointing back at a service cannot loop. The
app holds no registry state of its own: plugins live in Redis, shared by all replicas and read
on every request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from rewards.base import RewardItem
from rewards.service.egress import EgressPolicy, EgressRefused
from rewards.service.guards import (
    AuthMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
    RateLimitMiddleware,
)
from rewards.service.metrics import ServiceMetrics
from rewards.service.plugins import HOP_HEADER, PluginCaller
from rewards.service.schemas import (
    NAME_PATTERN,
    Health,
    PluginSpec,
    RewardInfo,
    RewardList,
    ScoreRequest,
    ScoreResponse,
)
from rewards.service.scoring import BUILTINS, Scorer
from rewards.service.settings import ServiceSettings
from rewards.service.store import RedisStore, StoreUnavailable

log = logging.getLogger("rlsys.service")
_REGISTRY_DOWN = "plugin registry unavailable: Redis cannot be reached; retry later"
# Documents the bearer scheme in OpenAPI; AuthMiddleware enforces it before the body is read.
_bearer = HTTPBearer(auto_error=False, description="Required when the service has a token.")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token"},
    413: {"description": "Body or batch too large"},
    422: {"description": "Malformed body or parameters"},
    429: {"description": "Rate limit exceeded"},
}
_REGISTRY_ERRORS = {**_ERRORS, 503: {"description": "Plugin registry (Redis) unavailable"}}
# FastAPI answers 400 when the body cannot be decoded at all (e.g. bytes that are not UTF-8).
_BODY_ERRORS = {**_REGISTRY_ERRORS, 400: {"description": "Body is not decodable JSON"}}
_NAME = Path(pattern=NAME_PATTERN, description="Reward or plugin name.")
_INPUT_SCHEMA = ScoreRequest.model_json_schema()

ops = APIRouter(tags=["ops"])
v1 = APIRouter(prefix="/v1", dependencies=[Depends(_bearer)])


def create_app(settings: ServiceSettings) -> FastAPI:
    """Build the app for ``settings``; Redis is connected lazily (in the lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = RedisStore(settings.redis_url, timeout_s=settings.redis_timeout_s)
        redis = urlsplit(settings.redis_url)
        denied = [(redis.hostname, redis.port or 6379)] if redis.hostname else []
        app.state.plugins = PluginCaller(
            EgressPolicy.from_entries(settings.allow_plugin_hosts, denied=denied),
            settings.plugin_concurrency, settings.plugin_max_response_bytes, settings.max_batch)
        if settings.token is None:
            log.warning("AUTHENTICATION IS DISABLED (--insecure-no-auth): anyone who can reach "
                        "%s:%d may score and register plugins", settings.host, settings.port)
        if settings.allow_plugin_hosts:
            log.warning("plugin hosts allowed although not public: %s",
                        ", ".join(settings.allow_plugin_hosts))
        try:
            yield
        finally:
            await app.state.plugins.close()
            await app.state.store.close()

    app = FastAPI(title="rlsys reward service", version="1", lifespan=lifespan,
                  description="Scores (prompt, response, reference) items with built-in "
                              "rewards and remote plugins registered in a shared Redis.")
    metrics = ServiceMetrics()
    app.state.settings, app.state.metrics, app.state.store = settings, metrics, None
    app.state.plugins = None  # built in the lifespan: its client and pool need the event loop
    app.state.scorer = Scorer(metrics, lambda: app.state.store, lambda: app.state.plugins,
                              cache_ttl_s=settings.cache_ttl_s,
                              plugin_timeout_s=settings.plugin_timeout_s,
                              grading_budget_s=settings.grading_budget_s,
                              grading_concurrency=settings.grading_concurrency)
    app.include_router(ops)
    app.include_router(v1)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        return AsciiJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(RequestValidationError, invalid)
    # add_middleware wraps: the last one added runs first.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimitMiddleware, limit_per_min=settings.rate_limit_per_min,
                       store=lambda: app.state.store)
    app.add_middleware(AuthMiddleware, token=settings.token)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=lambda: app.routes)
    return app


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so echoing an input that is not valid Unicode (a lone
    surrogate in a 422's ``input``) cannot fail to encode."""

    def render(self, content: Any) -> bytes:
        """Encode ``content`` as ASCII JSON."""
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


def _store(request: Request) -> RedisStore:
    store = request.app.state.store
    if store is None:  # only before the lifespan ran
        raise HTTPException(503, _REGISTRY_DOWN)
    return store


@ops.get("/healthz", response_model=Health)
async def healthz(request: Request) -> Health:
    """Always 200 while the process serves. ``redis`` is ``down`` when Redis is unreachable:
    built-ins then still score (uncached) and plugin-registry calls answer 503."""
    store = request.app.state.store
    up = store is not None and await store.ping()
    return Health(status="ok", redis="ok" if up else "down")


@ops.get("/metrics", response_class=Response, responses=_ERRORS,
         dependencies=[Depends(_bearer)])
async def metrics_text(request: Request) -> Response:
    """Prometheus text exposition: requests, latency, cache, sandbox verdicts."""
    return Response(request.app.state.metrics.render(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")


@v1.get("/rewards", response_model=RewardList, responses=_ERRORS, tags=["rewards"])
async def list_rewards(request: Request) -> RewardList:
    """Built-in rewards and registered plugins, each with its input schema."""
    rewards = [RewardInfo(name=n, kind="builtin", input_schema=_INPUT_SCHEMA) for n in BUILTINS]
    try:
        plugins = await _store(request).plugins()
    except (StoreUnavailable, HTTPException):
        return RewardList(rewards=rewards, plugins_available=False)
    rewards += [RewardInfo(name=n, kind="plugin", url=spec["url"], input_schema=_INPUT_SCHEMA)
                for n, spec in sorted(plugins.items())]
    return RewardList(rewards=rewards, plugins_available=True)


@v1.post("/rewards/{name}/score", response_model=ScoreResponse, tags=["rewards"],
         responses={**_BODY_ERRORS, 404: {"description": "Unknown reward"},
                    508: {"description": "A plugin call would be proxied to another plugin"}})
async def score(request: Request, body: ScoreRequest, name: str = _NAME) -> ScoreResponse:
    """Score a batch; per-item failures come back in ``errors`` with a null score."""
    settings: ServiceSettings = request.app.state.settings
    scorer: Scorer = request.app.state.scorer
    if len(body.items) > settings.max_batch:
        raise HTTPException(413, f"batch of {len(body.items)} items exceeds the limit of "
                                 f"{settings.max_batch} (max_batch)")
    items = [RewardItem(it.prompt, it.response, it.reference) for it in body.items]
    if name in BUILTINS:
        scores = await scorer.score_builtin(name, items)
    else:
        try:
            spec = await _store(request).plugin(name)
        except StoreUnavailable:
            raise HTTPException(503, _REGISTRY_DOWN) from None
        if spec is None:
            raise HTTPException(404, f"unknown reward {name!r}; built-ins: "
                                     f"{', '.join(BUILTINS)}; plugins: see GET /v1/rewards")
        if request.headers.get(HOP_HEADER):
            raise HTTPException(508, f"loop detected: {name!r} is a plugin and this request "
                                     "already comes from a plugin call")
        scores = await scorer.score_plugin(name, spec, items)
    return ScoreResponse(scores=[s.value if s.ok else None for s in scores],
                         errors=[None if s.ok else (s.error or "no score") for s in scores])


@v1.post("/plugins", status_code=201, tags=["plugins"],
         responses={**_BODY_ERRORS, 200: {"description": "Replaced"},
                    409: {"description": "Name of a built-in"}})
async def register_plugin(request: Request, spec: PluginSpec,
                          response: Response) -> dict[str, Any]:
    """Register (201) or replace (200) a remote plugin; every replica sees it at once."""
    if spec.name in BUILTINS:
        raise HTTPException(409, f"{spec.name!r} is a built-in reward; pick another name")
    _store(request)  # 503 before the lifespan ran
    try:
        await request.app.state.plugins.check_url(spec.url)
    except EgressRefused as exc:
        raise HTTPException(422, [{"type": "url_not_allowed", "loc": ["body", "url"],
                                   "msg": str(exc), "input": spec.url}]) from None
    limit = request.app.state.settings.plugin_timeout_s  # default and upper bound
    stored = {"url": spec.url, "timeout_s": min(spec.timeout_s or limit, limit)}
    try:
        created = await _store(request).put_plugin(spec.name, stored)
    except StoreUnavailable:
        raise HTTPException(503, _REGISTRY_DOWN) from None
    response.status_code = 201 if created else 200
    return {"name": spec.name, **stored}


@v1.delete("/plugins/{name}", tags=["plugins"],
           responses={**_REGISTRY_ERRORS, 404: {"description": "Not registered"}})
async def unregister_plugin(request: Request, name: str = _NAME) -> dict[str, Any]:
    """Remove a registered plugin."""
    try:
        existed = await _store(request).delete_plugin(name)
    except StoreUnavailable:
        raise HTTPException(503, _REGISTRY_DOWN) from None
    if not existed:
        raise HTTPException(404, f"no plugin named {name!r} is registered")
    return {"name": name, "deleted": True}
