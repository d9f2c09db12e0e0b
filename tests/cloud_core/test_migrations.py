"""The Alembic migrations build exactly the schema the models describe, on SQLite and on PostgreSQL, and
downgrade back to nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from cloud_core.db import Database, alembic_config
from cloud_core.models import Base
from tests.cloud_core.cloudkit import postgres_database


def differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, Base.metadata)


async def check(url: str) -> None:
    async with Database(url) as database, database.engine.begin() as connection:
        assert await connection.run_sync(differences) == []

        def downgrade(connection: Connection) -> list[str]:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
            return [t for t in inspect(connection).get_table_names() if t != "alembic_version"]

        assert await connection.run_sync(downgrade) == []


async def test_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    await check(f"sqlite+aiosqlite:///{tmp_path}/registry.db")


async def test_postgres_schema_matches_the_models() -> None:
    async with postgres_database() as url:
        await check(url)
