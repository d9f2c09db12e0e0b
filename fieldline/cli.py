"""The ``fieldline`` command. Each subcommand's package is imported only when that subcommand runs, so the edge
install (``pip install 'fieldline[edge]'``) works without the cloud's dependencies.

The group is built on typer alone: typer (0.20 and later) carries its own copy of click, and a plain click group
around typer sub-apps would not recognise their exit and usage-error exceptions."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import version
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

# name -> (module with a typer app named `app`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "edge": ("edge_agent.cli", "Run and inspect the gateway agent."),
    "demo": ("fieldline.demo", "Run a local broker, an agent and simulated devices with live counters."),
    "workflow": ("workflows.cli", "Validate, dry-run and draw workflows and rules."),
    "cloud": ("cloud_core.cli", "Run and administer the cloud core (REST API, registry, ingest)."),
    "certs": ("certs.cli", "PKI: CA, certificates, CRLs, the broker's mutual-TLS and ACL configuration."),
    "sim": ("device_sim.cli", "Simulate device fleets: live runs, load tests, replays."),
}
# The extra that installs what a subcommand needs (`dev` when it is not listed).
EXTRAS = {"edge": "edge", "workflow": "workflows", "cloud": "cloud", "certs": "certs", "sim": "sim"}
# Parts of the product that are not built yet say so instead of failing with an import error.
NOT_YET: dict[str, str] = {}


class LazyGroup(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        return sorted([*SUBCOMMANDS, *NOT_YET])

    def get_command(self, ctx: Any, name: str) -> Any:
        if name in NOT_YET:
            return _not_yet(name, NOT_YET[name])
        if name not in SUBCOMMANDS:
            return None
        module_name, help_text = SUBCOMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            typer.echo(
                f"Error: `fieldline {name}` needs packages that are not installed ({exc.name}); "
                f"install them with: pip install 'fieldline[{EXTRAS.get(name, 'dev')}]'",
                err=True,
            )
            raise typer.Exit(1) from exc
        command = typer.main.get_command(module.app)
        command.name = name
        command.help = command.help or help_text
        return command


def _not_yet(name: str, what: str) -> Any:
    app = typer.Typer(add_completion=False)

    @app.command(
        name=name,
        help=f"Not available yet: {what}.",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def command() -> None:
        typer.echo(
            f"Error: `fieldline {name}` is not part of this release yet: {what} is being built", err=True
        )
        raise typer.Exit(1)

    return typer.main.get_command(app)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"fieldline, version {version('fieldline')}")
        raise typer.Exit()


cli = typer.Typer(cls=LazyGroup, no_args_is_help=True, add_completion=False)


@cli.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Fieldline: IoT edge-to-cloud device workflows."""


def main() -> None:
    sys.exit(typer.main.get_command(cli).main(prog_name="fieldline"))
