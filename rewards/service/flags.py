"""Command-line flags of the reward service, shared by ``rlsys serve`` and
``python -m rewards.service``, and their conversion into ``ServiceSettings``.

A flag left out falls back to the settings' default (which reads ``RLSYS_API_TOKEN``,
``RLSYS_REDIS_URL``, ``RLSYS_RATE_LIMIT_PER_MIN`` and ``RLSYS_ALLOW_PLUGIN_HOSTS``). Invalid values
raise ``ServiceConfigError`` with one line naming the flag. Importing this module imports neither
FastAPI nor Redis. It does not start anything.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from rewards.service.settings import ServiceSettings

# settings field -> (flag, type, help); every one defaults to None = "the settings' default"
_FLAGS: dict[str, tuple[str, type, str]] = {
    "redis_url": ("--redis-url", str, "Redis URL (default: $RLSYS_REDIS_URL, else "
                                      "redis://127.0.0.1:6379/0)"),
    "rate_limit_per_min": ("--rate-limit-per-min", int,
                           "requests/min per token and client on /v1/* (default: "
                           "$RLSYS_RATE_LIMIT_PER_MIN, else 0 = unlimited)"),
    "max_body_bytes": ("--max-body-bytes", int, "largest request body (413 above)"),
    "max_batch": ("--max-batch", int, "most items per score request (413 above)"),
    "cache_ttl_s": ("--cache-ttl-s", int, "lifetime of cached built-in scores; 0 = no cache"),
    "plugin_timeout_s": ("--plugin-timeout-s", float,
                         "default and largest total deadline of a plugin call"),
    "plugin_max_response_bytes": ("--plugin-max-response-bytes", int,
                                  "largest plugin answer read"),
    "plugin_concurrency": ("--plugin-concurrency", int, "most plugin calls in flight"),
    "grading_budget_s": ("--grading-budget-s", float,
                         "total grading time of one built-in request; later items time out"),
    "grading_concurrency": ("--grading-concurrency", int,
                            "built-in grading jobs at once, shared fairly by requests"),
}


class ServiceConfigError(ValueError):
    """A flag or environment value the service cannot start with (one line)."""


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the service's flags (except host/port/token, which each command defines)."""
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="serve without a bearer token (local development only)")
    parser.add_argument("--allow-plugin-host", action="append", default=None, metavar="HOST",
                        help="allow plugins on this non-public address, CIDR network or exact "
                             "host name (repeatable; default: $RLSYS_ALLOW_PLUGIN_HOSTS)")
    for field, (flag, kind, help_) in _FLAGS.items():
        parser.add_argument(flag, dest=field, type=kind, default=None, help=help_)


def settings_from_args(args: argparse.Namespace, **explicit: object) -> ServiceSettings:
    """``ServiceSettings`` from parsed flags plus ``explicit`` values (host, port, token)."""
    kwargs: dict[str, Any] = {k: v for k, v in explicit.items() if v is not None}
    kwargs.update({f: getattr(args, f) for f in _FLAGS if getattr(args, f) is not None})
    if args.insecure_no_auth:
        kwargs["insecure_no_auth"] = True
    if args.allow_plugin_host is not None:
        kwargs["allow_plugin_hosts"] = tuple(
            e.strip() for arg in args.allow_plugin_host for e in arg.split(",") if e.strip())
    try:
        return ServiceSettings(**kwargs)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        flag = _FLAGS.get(where, (f"--{where.replace('_', '-')}",))[0] if where else ""
        message = first["msg"].removeprefix("Value error, ")
        raise ServiceConfigError(f"{flag}: {message}" if flag else message) from None
    except ValueError as exc:  # an environment default that does not parse
        raise ServiceConfigError(str(exc)) from None
