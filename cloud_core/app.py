"""The FastAPI application: ``create_app(settings)``; its lifespan opens the services and closes them on
shutdown (uvicorn stops accepting requests first, then the parts flush what they hold)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from cloud_core import problems
from cloud_core.api.routes import ROUTERS
from cloud_core.services import open_services
from cloud_core.settings import CloudSettings

log = logging.getLogger("fieldline.cloud")


def create_app(settings: CloudSettings | None = None) -> FastAPI:
    settings = settings or CloudSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
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

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        services = getattr(request.app.state, "services", None)
        if services is not None:
            elapsed = time.perf_counter() - started
            services.metrics.requests.labels(request.method, template, str(response.status_code)).inc()
            services.metrics.latency.labels(request.method, template).observe(elapsed)
        return response

    for router in ROUTERS:
        app.include_router(router)
    return app
