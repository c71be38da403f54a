"""Typed settings of the reward service (``rlsys serve``).

Only configuration lives here: no I/O beyond reading ``RLSYS_API_TOKEN``, ``RLSYS_REDIS_URL``,
``RLSYS_RATE_LIMIT_PER_MIN`` and ``RLSYS_ALLOW_PLUGIN_HOSTS`` from the environment when no
value is given explicitly. A service without a token refuses to be built unless
``insecure_no_auth`` says so explicitly.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TOKEN_ENV = "RLSYS_API_TOKEN"
RATE_LIMIT_ENV = "RLSYS_RATE_LIMIT_PER_MIN"
ALLOW_HOSTS_ENV = "RLSYS_ALLOW_PLUGIN_HOSTS"


def _redis_url_from_env() -> str:
    return os.environ.get("RLSYS_REDIS_URL") or "redis://127.0.0.1:6379/0"


def _token_from_env() -> str | None:
    return os.environ.get(TOKEN_ENV, "").strip() or None


def rate_limit_from_env() -> int:
    """``$RLSYS_RATE_LIMIT_PER_MIN`` as an int (0 when unset); ValueError names the variable."""
    raw = os.environ.get(RATE_LIMIT_ENV, "").strip()
    try:
        return int(raw) if raw else 0
    except ValueError:
        raise ValueError(f"{RATE_LIMIT_ENV}={raw!r} is not an integer") from None


def allowed_hosts_from_env() -> tuple[str, ...]:
    """``$RLSYS_ALLOW_PLUGIN_HOSTS``: comma-separated addresses, networks or host names."""
    raw = os.environ.get(ALLOW_HOSTS_ENV, "")
    return tuple(e.strip() for e in raw.split(",") if e.strip())


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
                                          "defaults to $RLSYS_API_TOKEN. Without one the "
                                          "service refuses to start unless insecure_no_auth.")
    insecure_no_auth: bool = Field(False, description="Serve without any token (local "
                                                      "development only; logged loudly).")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1,
                                description="Largest accepted request body (413 above).")
    max_batch: int = Field(1024, ge=1, description="Most items in one score request (413 above).")
    cache_ttl_s: int = Field(3600, ge=0,
                             description="Lifetime of cached built-in scores; 0 disables caching.")
    rate_limit_per_min: int = Field(default_factory=rate_limit_from_env, ge=0,
                                    description="Requests per minute per (token, client "
                                                "address) on /v1/*; 0 = unlimited; defaults to "
                                                "$RLSYS_RATE_LIMIT_PER_MIN, else 0.")
    plugin_timeout_s: float = Field(30.0, gt=0, le=600,
                                    description="Default and largest total deadline of a "
                                                "proxied plugin call (queueing, connecting, "
                                                "sending and reading the whole answer), in s.")
    plugin_max_response_bytes: int = Field(4 * 1024 * 1024, ge=1024,
                                           description="Largest plugin answer read; a longer "
                                                       "one is cut off and is an error.")
    plugin_concurrency: int = Field(32, ge=1,
                                    description="Most plugin calls in flight at once (a pool "
                                                "of their own: built-ins never wait for it).")
    allow_plugin_hosts: tuple[str, ...] = Field(
        default_factory=allowed_hosts_from_env,
        description="Plugin hosts allowed although not public: IPs, CIDR networks or exact "
                    "host names (local development); defaults to $RLSYS_ALLOW_PLUGIN_HOSTS "
                    "(comma-separated), else none.")
    grading_budget_s: float = Field(30.0, gt=0, le=3600,
                                    description="Total grading time of one built-in score "
                                                "request; items not graded by then are "
                                                "reported as timed out.")
    grading_concurrency: int = Field(default_factory=lambda: max(2, os.cpu_count() or 1), ge=1,
                                     description="Built-in grading jobs (one item each, for "
                                                 "math and code) run at once, shared fairly "
                                                 "(least served first) between requests.")
    redis_timeout_s: float = Field(0.5, gt=0,
                                   description="Redis socket/connect timeout; kept short so a "
                                               "dead Redis degrades the service instead of "
                                               "stalling it.")

    @field_validator("token")
    @classmethod
    def _blank_token_is_none(cls, token: str | None) -> str | None:
        if token is not None and not token.strip():
            return None
        if token is not None and (token != token.strip() or not token.isprintable()):
            raise ValueError("token must be printable with no surrounding whitespace")
        return token

    @model_validator(mode="after")
    def _auth_is_explicit(self) -> ServiceSettings:
        if self.token is None and not self.insecure_no_auth:
            raise ValueError(f"no API token: set ${TOKEN_ENV} (or --token), or pass "
                             "--insecure-no-auth to serve without authentication")
        return self
