"""``fieldline cloud``: serve the API; create, list and revoke API keys (the first admin key comes from
``create-key --role admin``, run against the service's database)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from cloud_core.audit import record_command
from cloud_core.auth import Role, create_key, list_keys, revoke_key
from cloud_core.db import Database
from cloud_core.schemas.timestamps import as_utc
from cloud_core.settings import CloudSettings, load_settings
from fieldline.errors import ConfigError
from fieldline.logs import setup_logging

app = typer.Typer(help="Run and administer the cloud core.", no_args_is_help=True, add_completion=False)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="cloud.yaml; embedded defaults when absent")
]


def _settings(config: Path | None) -> CloudSettings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        raise SystemExit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="listen address (default from settings: 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default from settings: 8080)")] = None,
) -> None:
    """Serve the REST API (OpenAPI at /docs) until SIGTERM or Ctrl-C."""
    from cloud_core.app import create_app

    settings = _settings(config)
    setup_logging(settings.log_level.lower(), settings.log_format)
    uvicorn.run(
        create_app(settings, tune_gc=True),
        host=host or settings.api.host,
        port=port if port is not None else settings.api.port,
        log_config=None,
        access_log=False,  # the app logs one structured line per request
        timeout_graceful_shutdown=int(settings.api.shutdown_grace),
    )


@app.command("create-key")
def create_key_command(
    role: Annotated[str, typer.Option(help="viewer, operator or admin")] = "admin",
    name: Annotated[str, typer.Option(help="what the key is for")] = "",
    config: ConfigOption = None,
) -> None:
    """Create an API key and print it (once: only its hash is stored)."""
    settings = _settings(config)
    try:
        parsed = Role.parse(role)
    except ValueError as exc:
        err.print(f"error: {exc}")
        raise SystemExit(2) from None

    async def run() -> str:
        async with Database(settings.database_url) as database:
            key = await create_key(database, parsed, name=name, created_by="cli")
            await record_command(database, "create-key", key.id, 201, role=parsed.label)
        return key.token

    token = asyncio.run(run())
    err.print(f"created {parsed.label} key; store it now, it is not shown again:")
    typer.echo(token)


@app.command("list-keys")
def list_keys_command(config: ConfigOption = None) -> None:
    """List the API keys, newest first (never their secrets); tab-separated when piped."""
    settings = _settings(config)

    async def run() -> list[tuple[str, ...]]:
        async with Database(settings.database_url) as database, database.session() as session:
            return [
                (
                    k.id,
                    k.role,
                    k.name,
                    k.created_by or "",
                    as_utc(k.created_at).strftime("%Y-%m-%d %H:%M"),
                    as_utc(k.revoked_at).strftime("%Y-%m-%d %H:%M") if k.revoked_at else "",
                )
                for k in await list_keys(session)
            ]

    rows = asyncio.run(run())
    if not sys.stdout.isatty():  # piped: one tab-separated line per key, for scripts
        for row in rows:
            typer.echo("\t".join(row))
        return
    table = Table("id", "role", "name", "created by", "created (UTC)", "revoked (UTC)")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@app.command("revoke-key")
def revoke_key_command(
    key_id: Annotated[str, typer.Argument(help="the key's id (fl_<id>_...)")], config: ConfigOption = None
) -> None:
    """Revoke an API key. Running services stop accepting it within 5 s (their credential cache)."""
    settings = _settings(config)

    async def run() -> bool:
        async with Database(settings.database_url) as database:
            if await revoke_key(database, key_id) is None:
                return False
            await record_command(database, "revoke-key", key_id, 200)
            return True

    if not asyncio.run(run()):
        err.print(f"error: no API key {key_id!r}", markup=False)
        raise SystemExit(1)
    err.print(f"revoked {key_id}", markup=False)
