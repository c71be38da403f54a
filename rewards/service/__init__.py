"""The reward-plugin REST service (``rlsys serve``): FastAPI app, Redis store, uvicorn runner.

``create_app(settings)`` builds the app; ``serve(settings)`` runs it with uvicorn (one worker;
run more processes against the same Redis to scale out). Importing this package does not
connect to Redis or import the built-in rewards; that happens on first use.
"""

from __future__ import annotations

from rewards.service.app import create_app
from rewards.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "serve"]


def serve(settings: ServiceSettings, log_level: str = "info") -> None:
    """Run the service in the foreground on ``settings.host:settings.port`` until stopped."""
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=log_level, access_log=False, proxy_headers=False)
