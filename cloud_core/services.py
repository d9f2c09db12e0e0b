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

from cloud_core.auth import Authenticator
from cloud_core.bus import EventBus
from cloud_core.db import Database
from cloud_core.metrics import CloudMetrics
from cloud_core.settings import CloudSettings


@dataclass
class Services:
    settings: CloudSettings
    database: Database
    bus: EventBus
    auth: Authenticator
    metrics: CloudMetrics
    started_at: float = field(default_factory=time.time)
    parts: dict[str, Any] = field(default_factory=dict)
    """Optional parts by name (``tsdb``, ``ingest``, ``commands``), present when configured."""


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
        yield services
