"""Everything a running cloud core holds, opened in order and closed in reverse.

``open_services(settings)`` is the one place that wires the parts together; the FastAPI app's lifespan enters it
and keeps the result on ``app.state.services``. Tests open it directly to exercise parts without HTTP.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from cloud_core.audit import AuditLog
from cloud_core.auth import Authenticator
from cloud_core.bus import EventBus
from cloud_core.commands import CommandRouter
from cloud_core.db import Database
from cloud_core.ingest import Ingest
from cloud_core.metrics import CloudMetrics
from cloud_core.pki import open_pki
from cloud_core.point_reads import PointReader
from cloud_core.settings import CloudSettings
from cloud_core.tsdb import open_timeseries


@dataclass
class Services:
    settings: CloudSettings
    database: Database
    bus: EventBus
    auth: Authenticator
    metrics: CloudMetrics
    started_at: float = field(default_factory=time.time)
    parts: dict[str, Any] = field(default_factory=dict)
    """Optional parts by name (``tsdb``, ``ingest``, ``commands``, ``pki``), present when configured."""


@asynccontextmanager
async def open_services(settings: CloudSettings) -> AsyncIterator[Services]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(
            Database(
                settings.database_url, echo=settings.database.echo, pool_size=settings.database.pool_size
            )
        )
        bus = EventBus()
        services = Services(settings, database, bus, Authenticator(database, settings.auth), CloudMetrics())
        services.parts["audit"] = await stack.enter_async_context(
            AuditLog(database, services.metrics, settings.audit)
        )
        services.parts["point_reads"] = await stack.enter_async_context(PointReader(database))
        services.parts["tsdb"] = tsdb = await stack.enter_async_context(open_timeseries(settings))
        services.metrics.register_source("tsdb", tsdb.stats)
        services.parts["commands"] = await stack.enter_async_context(
            CommandRouter(settings, database, bus, services.metrics)
        )
        if settings.pki.enabled:
            services.parts["pki"] = await stack.enter_async_context(open_pki(settings, database, bus))
        if settings.broker.host is not None:
            services.parts["ingest"] = await stack.enter_async_context(
                Ingest(settings, database, bus, services.metrics, tsdb)
            )
        yield services
