"""The FastAPI application factory. One router module per resource; this file only assembles them."""

from __future__ import annotations

import time

from fastapi import FastAPI

from orch import __version__
from orch.config.schema import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: this process's settings)."""
    if settings is None:
        from orch.config.runtime import get_settings

        settings = get_settings()
    from orch.api import health

    app = FastAPI(title="ORCH-Next", version=__version__,
                  description="Task dispatch, operations and health for ORCH-Next.")
    app.state.settings = settings
    app.state.started = time.monotonic()
    app.include_router(health.router)
    return app
