"""The ``fieldline`` command. Each subcommand's package is imported only when that subcommand runs, so the edge
install (``pip install 'fieldline[edge]'``) works without the cloud's dependencies."""

from __future__ import annotations

import importlib
import sys

import click
import typer.main

# name -> (module with a typer app named `app`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "edge": ("edge_agent.cli", "Run and inspect the gateway agent."),
    "demo": ("fieldline.demo", "Run a local broker, an agent and simulated devices with live counters."),
}
# Parts of the product that are not built yet say so instead of failing with an import error.
NOT_YET = {
    "cloud": "the cloud core (issue 4)",
    "sim": "the fleet simulator (issue 6)",
    "certs": "the PKI tooling (issue 5)",
    "workflow": "the workflow engine (issue 3)",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*SUBCOMMANDS, *NOT_YET])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in NOT_YET:
            return _not_yet(name, NOT_YET[name])
        if name not in SUBCOMMANDS:
            return None
        module_name, _ = SUBCOMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = "edge" if name == "edge" else "dev"
            raise click.ClickException(
                f"`fieldline {name}` needs packages that are not installed ({exc.name}); "
                f"install them with: pip install 'fieldline[{extra}]'"
            ) from exc
        command = typer.main.get_command(module.app)
        command.help = command.help or SUBCOMMANDS[name][1]
        return command


def _not_yet(name: str, what: str) -> click.Command:
    @click.command(
        name=name, help=f"Not available yet: {what}.", context_settings={"ignore_unknown_options": True}
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise click.ClickException(
            f"`fieldline {name}` is not part of this release yet: {what} is being built"
        )

    return command


@click.group(cls=LazyGroup, help="Fieldline: IoT edge-to-cloud device workflows.")
@click.version_option(package_name="fieldline")
def cli() -> None:
    pass


def main() -> None:
    sys.exit(cli.main(prog_name="fieldline", standalone_mode=True))
