"""The reward-plugin REST service (``rlsys serve``): FastAPI app, Redis store, uvicorn runner.

``create_app(settings)`` builds the app; ``serve(settings)`` runs it with uvicorn (one worker;
run more processes against the same Redis to scale out). Importing this package does not
import FastAPI, connect to Redis or import the built-in rewards (``create_app`` is loaded on
first access, so ``rewards.service.flags`` stays light for the CLI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rewards.service.settings import ServiceSettings

if TYPE_CHECKING:
    from rewards.service.app import create_app

__all__ = ["ServiceSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from rewards.service.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serve(settings: ServiceSettings, log_level: str = "info") -> None:
    """Run the service in the foreground on ``settings.host:settings.port`` until stopped."""
    import uvicorn

    from rewards.service.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=log_level, access_log=False, proxy_headers=False)
