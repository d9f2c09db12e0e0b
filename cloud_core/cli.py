"""``fieldline cloud``: serve the API, bootstrap keys."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from cloud_core.auth import Role, create_key
from cloud_core.db import Database
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
        create_app(settings),
        host=host or settings.api.host,
        port=port if port is not None else settings.api.port,
        log_config=None,
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
        return key.token

    token = asyncio.run(run())
    err.print(f"created {parsed.label} key; store it now, it is not shown again:")
    typer.echo(token)
