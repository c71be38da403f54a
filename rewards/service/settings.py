"""Typed settings of the reward service (``rlsys serve``).

Only configuration lives here: no I/O beyond reading ``RLSYS_API_TOKEN`` and
``RLSYS_REDIS_URL`` from the environment when no value is given explicitly.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field


def _redis_url_from_env() -> str:
    return os.environ.get("RLSYS_REDIS_URL") or "redis://127.0.0.1:6379/0"


def _token_from_env() -> str | None:
    return os.environ.get("RLSYS_API_TOKEN") or None


class ServiceSettings(BaseModel):
    """Everything ``create_app``/``serve`` need; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Interface uvicorn binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port uvicorn listens on.")
    redis_url: str = Field(default_factory=_redis_url_from_env,
                           description="Redis holding the plugin registry, cache and rate "
                                       "limits; defaults to $RLSYS_REDIS_URL, else "
                                       "redis://127.0.0.1:6379/0.")
    token: str | None = Field(default_factory=_token_from_env,
                              description="Bearer token required on /v1/* and /metrics; "
                                          "defaults to $RLSYS_API_TOKEN; None disables auth.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1,
                                description="Largest accepted request body (413 above).")
    max_batch: int = Field(1024, ge=1, description="Most items in one score request (413 above).")
    cache_ttl_s: int = Field(3600, ge=0,
                             description="Lifetime of cached built-in scores; 0 disables caching.")
    rate_limit_per_min: int = Field(0, ge=0,
                                    description="Requests per minute per token (per client "
                                                "address without auth) on /v1/*; 0 = unlimited.")
    plugin_timeout_s: float = Field(30.0, gt=0, le=600,
                                    description="Default and largest timeout of a proxied "
                                                "plugin call, in seconds.")
    redis_timeout_s: float = Field(0.5, gt=0,
                                   description="Redis socket/connect timeout; kept short so a "
                                               "dead Redis degrades the service instead of "
                                               "stalling it.")
