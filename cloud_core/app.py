"""The FastAPI application: ``create_app(settings)``; its lifespan opens the services and closes them on
shutdown (uvicorn stops accepting requests first, then the parts flush what they hold)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cloud_core import problems
from cloud_core.api.routes import ROUTERS
from cloud_core.audit import AuditMiddleware
from cloud_core.observe import ObserveMiddleware
from cloud_core.services import open_services
from cloud_core.settings import CloudSettings
from fieldline import gc_policy

log = logging.getLogger("fieldline.cloud")


def create_app(settings: CloudSettings | None = None, *, tune_gc: bool = False) -> FastAPI:
    """The app; ``tune_gc`` applies the service's garbage-collector policy once it has started
    (``fieldline.gc_policy``: only for a process that serves one app for its whole life)."""
    settings = settings or CloudSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            if tune_gc:
                gc_policy.apply()
            log.info("cloud core ready", extra={"database": services.database.url.split("://")[0]})
            yield
            log.info("cloud core stopping")

    app = FastAPI(
        title="Fieldline cloud core",
        version="0.1.0",
        description="Device registry, telemetry, events, alerts and commands of a Fieldline fleet.",
        lifespan=lifespan,
    )
    problems.install(app)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    app.add_middleware(AuditMiddleware)

    app.add_middleware(ObserveMiddleware)

    for router in ROUTERS:
        app.include_router(router)
    return app
