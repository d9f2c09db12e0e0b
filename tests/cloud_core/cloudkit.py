"""The cloud core for tests: served by uvicorn on a free port (real HTTP), on SQLite or a fresh PostgreSQL
database, with an API key per role."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from cloud_core.app import create_app
from cloud_core.auth import Role, create_key
from cloud_core.services import Services
from cloud_core.settings import CloudSettings
from tests.servicekit import REQUIRE_SERVICES, free_port

POSTGRES_ADMIN_DSN = os.environ.get(
    "FIELDLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Cloud:
    url: str
    services: Services
    keys: dict[str, str]
    """API key token per role name (``viewer``, ``operator``, ``admin``)."""

    def client(self, role: str | None = "admin", **kwargs: object) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (dropped afterwards) as an async SQLAlchemy URL; skips when there is no
    server (fails under FIELDLINE_REQUIRE_SERVICES=1)."""
    asyncpg = pytest.importorskip("asyncpg")
    name = f"fieldline_test_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"needs PostgreSQL at {POSTGRES_ADMIN_DSN} ({exc})"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (FIELDLINE_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def running_cloud(
    tmp_path: Path,
    settings: CloudSettings | None = None,
    *,
    port: int | None = None,
    tls: tuple[Path, Path] | None = None,
) -> AsyncIterator[Cloud]:
    """Serve the cloud core on ``port`` (default a free one) until the block ends; keys for every role are
    created first. ``tls`` (certificate chain file, key file) serves HTTPS instead of HTTP."""
    settings = settings or CloudSettings(data_dir=tmp_path / "cloud")
    port = port or free_port()
    app = create_app(settings)
    certfile, keyfile = (str(tls[0]), str(tls[1])) if tls else (None, None)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server stopped while starting")
            await asyncio.sleep(0.02)
        services: Services = app.state.services
        keys = {
            role.label: (await create_key(services.database, role, name=f"test {role.label}")).token
            for role in Role
        }
        yield Cloud(f"{'https' if tls else 'http'}://127.0.0.1:{port}", services, keys)
    finally:
        server.should_exit = True
        await task
