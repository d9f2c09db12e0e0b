"""Liveness (``/healthz``), readiness (``/readyz``: the database and every configured part answer) and
Prometheus ``/metrics``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from cloud_core.api.deps import ServicesDep
from cloud_core.problems import Problem

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str
    uptime_s: float


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/healthz", response_model=Health)
async def healthz(services: ServicesDep) -> Health:
    return Health(status="ok", uptime_s=round(time.time() - services.started_at, 1))


@router.get(
    "/readyz", response_model=Readiness, responses={503: {"description": "a dependency is not ready"}}
)
async def readyz(services: ServicesDep) -> Readiness:
    checks: dict[str, str] = {}
    try:
        await services.database.ping()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason is reported
        checks["database"] = f"error: {exc}"
    for name, part in services.parts.items():
        ready = getattr(part, "ready", None)
        if ready is None:
            continue
        try:
            await ready()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks[name] = f"error: {exc}"
    if any(v != "ok" for v in checks.values()):
        raise Problem(
            503, "Not ready", "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"), checks=checks
        )
    return Readiness(status="ready", checks=checks)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
