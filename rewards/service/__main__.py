"""``python -m rewards.service [--host H --port P --redis-url URL ...]``: run the service.

The token is read from ``$RLSYS_API_TOKEN`` (never from the command line, where ``ps`` shows
it); without one the service refuses to start unless ``--insecure-no-auth`` is given. Bad flags
exit 2 with one line naming the flag.
"""

from __future__ import annotations

import argparse
import sys

from rewards.service.flags import ServiceConfigError, add_service_arguments, settings_from_args
from rewards.service.settings import ServiceSettings


def main(argv: list[str] | None = None) -> None:
    """Parse flags into ``ServiceSettings`` and serve."""
    defaults = ServiceSettings.model_fields
    parser = argparse.ArgumentParser(prog="python -m rewards.service", description=__doc__)
    parser.add_argument("--host", default=defaults["host"].default)
    parser.add_argument("--port", type=int, default=defaults["port"].default)
    add_service_arguments(parser)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args, host=args.host, port=args.port)
    except ServiceConfigError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from rewards.service import serve

    serve(settings, log_level=args.log_level)


if __name__ == "__main__":
    main()
