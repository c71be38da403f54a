"""``python -m rewards.service [--host H --port P --redis-url URL ...]``: run the service.

The token is read from ``$RLSYS_API_TOKEN`` (never from the command line, where ``ps`` shows it).
"""

from __future__ import annotations

import argparse

from rewards.service import ServiceSettings, serve


def main(argv: list[str] | None = None) -> None:
    """Parse flags into ``ServiceSettings`` and serve."""
    defaults = ServiceSettings.model_fields
    parser = argparse.ArgumentParser(prog="python -m rewards.service", description=__doc__)
    parser.add_argument("--host", default=defaults["host"].default)
    parser.add_argument("--port", type=int, default=defaults["port"].default)
    parser.add_argument("--redis-url", default=None, help="default: $RLSYS_REDIS_URL, else "
                        "redis://127.0.0.1:6379/0")
    parser.add_argument("--max-body-bytes", type=int, default=defaults["max_body_bytes"].default)
    parser.add_argument("--max-batch", type=int, default=defaults["max_batch"].default)
    parser.add_argument("--cache-ttl-s", type=int, default=defaults["cache_ttl_s"].default)
    parser.add_argument("--rate-limit-per-min", type=int,
                        default=defaults["rate_limit_per_min"].default)
    parser.add_argument("--plugin-timeout-s", type=float,
                        default=defaults["plugin_timeout_s"].default)
    parser.add_argument("--log-level", default="info")
    args = vars(parser.parse_args(argv))
    log_level = args.pop("log_level")
    if args["redis_url"] is None:
        del args["redis_url"]
    serve(ServiceSettings(**args), log_level=log_level)


if __name__ == "__main__":
    main()
