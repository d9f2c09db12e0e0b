"""``fieldline sim``: play a fleet live, load a broker at a target rate, replay recorded telemetry, validate
fleet files.

Exit codes: 0 success; 1 the check failed (``validate`` found errors, a replay had bad rows, a run could not
connect any device); 2 bad usage or a file that cannot be loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from device_sim.errors import SimError
from device_sim.fleet import Fleet, load_fleet
from device_sim.load import LoadOptions, LoadRun
from device_sim.mqtt_transport import Broker
from device_sim.replay import BadRow, replay
from device_sim.runner import LiveRun, RunOptions
from fieldline.durations import parse_duration
from fieldline.errors import ConfigError

app = typer.Typer(
    help="Simulate device fleets: live runs, load tests, replays.", no_args_is_help=True, add_completion=False
)
out = Console(soft_wrap=True, highlight=False)
errors = Console(stderr=True, soft_wrap=True, highlight=False)
T = TypeVar("T")

FleetArg = Annotated[Path, typer.Argument(help="Fleet file (YAML).", show_default=False)]
BrokerOpt = Annotated[
    str | None, typer.Option("--broker", help="mqtt://host:port (default: the fleet file's broker).")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Override the fleet file's seed.")]


def _fleet(path: Path) -> Fleet:
    try:
        return load_fleet(path)
    except ConfigError as exc:
        for issue in exc.issues:
            errors.print(escape(str(issue)))
        raise SystemExit(2) from None


def _duration(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if seconds <= 0:
        raise typer.BadParameter("must be positive", param_hint=option)
    return seconds


def _broker(url: str | None, fleet: Fleet | None) -> Broker:
    chosen = url or (fleet.broker if fleet is not None else None)
    if chosen is None:
        raise typer.BadParameter("no broker: give --broker mqtt://host:port", param_hint="--broker")
    try:
        return Broker.parse(chosen)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker") from None


def _run_until_signal(main: Callable[[], Coroutine[Any, Any, T]], on_signal: Callable[[], None]) -> T:
    """Run ``main`` with SIGINT and SIGTERM calling ``on_signal`` (a clean stop) instead of killing the run."""

    async def wrapper() -> T:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await main()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(sig)

    return asyncio.run(wrapper())


def _write_json(path: Path | None, document: dict[str, Any]) -> None:
    text = json.dumps(document, indent=2)
    if path is None:
        out.print(text, markup=False)
    else:
        path.write_text(text + "\n")
        errors.print(f"report written to {escape(str(path))}")


@app.command()
def run(
    fleet_file: FleetArg,
    duration: Annotated[
        str | None, typer.Option(help="Simulated time to play (60s, 10m, 2h); default: until Ctrl-C.")
    ] = None,
    broker: BrokerOpt = None,
    coap: Annotated[str | None, typer.Option(help="coap://host:port for CoAP devices.")] = None,
    speed: Annotated[float, typer.Option(min=0.001, help="Simulated seconds per real second.")] = 1.0,
    seed: SeedOpt = None,
    summary: Annotated[Path | None, typer.Option(help="Write the final summary (JSON) to this file.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
) -> None:
    """Play a fleet live: every device on its own connection, with faults, commands and discovery."""
    fleet = _fleet(fleet_file)
    options = RunOptions(
        broker=broker,
        coap=coap,
        duration=_duration(duration, "--duration"),
        speed=speed,
        seed=seed,
        progress=not quiet,
    )
    try:
        live = LiveRun(fleet, options)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    result = _run_until_signal(live.run, live.stop)
    _write_json(summary, result)
    if result["devices"]["mqtt"] and not result.get("mqtt", {}).get("connects"):
        errors.print(f"no device could connect: {escape(result['mqtt'].get('last_error', ''))}")
        raise SystemExit(1)


@app.command()
def load(
    fleet_file: FleetArg,
    rate: Annotated[float, typer.Option(min=1, help="Target messages per second, all connections together.")],
    duration: Annotated[str, typer.Option(help="How long to send (30s, 5m).")],
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here (default: stdout).")] = None,
    connections: Annotated[
        int | None, typer.Option(min=1, help="Connections to spread the devices over (default: the fleet's).")
    ] = None,
    qos: Annotated[
        int | None, typer.Option(min=0, max=1, help="QoS for every message (default: the fleet's).")
    ] = None,
    broker: BrokerOpt = None,
    seed: SeedOpt = None,
    measure: Annotated[
        bool,
        typer.Option(help="Subscribe to the same topics on the same broker: received count and latency."),
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
) -> None:
    """Send the fleet's telemetry at a target aggregate rate over few connections; report what happened."""
    fleet = _fleet(fleet_file)
    seconds = _duration(duration, "--duration")
    assert seconds is not None
    options = LoadOptions(
        rate=rate, duration=seconds, connections=connections, qos=qos, seed=seed, measure=measure
    )
    load_run = LoadRun(fleet, _broker(broker, fleet), options, progress=not quiet)
    try:
        load_run.prepare()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        result = asyncio.run(load_run.run())
    except (SimError, TimeoutError) as exc:
        errors.print(f"load run failed: {escape(str(exc) or type(exc).__name__)}")
        raise SystemExit(1) from None
    _write_json(report, result.to_dict())


@app.command(name="replay")
def replay_command(
    data_file: Annotated[Path, typer.Argument(help="Recorded telemetry: .csv (long or wide) or .jsonl.")],
    speed: Annotated[float, typer.Option(min=0.001, help="Recorded seconds per real second.")] = 1.0,
    as_fast_as_possible: Annotated[bool, typer.Option(help="Ignore the recorded timing.")] = False,
    broker: Annotated[str, typer.Option(help="mqtt://host:port")] = "mqtt://127.0.0.1:1883",
    qos: Annotated[int, typer.Option(min=0, max=1)] = 1,
    original_timestamps: Annotated[
        bool, typer.Option(help="Keep the recorded timestamps instead of moving them to now.")
    ] = False,
) -> None:
    """Replay recorded telemetry to devices/{id}/telemetry; bad rows are reported with their line and skipped."""
    target = _broker(broker, None)
    shown = [0]

    def bad_row(row: BadRow) -> None:
        shown[0] += 1
        if shown[0] <= 20:
            errors.print(escape(str(row)))

    try:
        result = asyncio.run(
            replay(
                data_file,
                target,
                speed=None if as_fast_as_possible else speed,
                original_timestamps=original_timestamps,
                qos=qos,
                on_bad_row=bad_row,
            )
        )
    except SimError as exc:
        errors.print(escape(str(exc)))
        raise SystemExit(2) from None
    if shown[0] > 20:
        errors.print(f"... and {shown[0] - 20} more bad rows")
    _write_json(None, result)
    if result["bad_rows"]:
        raise SystemExit(1)


@app.command()
def validate(fleet_file: FleetArg) -> None:
    """Check a fleet file; print its templates, or every error with file:line (exit 1)."""
    try:
        fleet = load_fleet(fleet_file)
    except ConfigError as exc:
        for issue in exc.issues:
            errors.print(escape(str(issue)))
        errors.print(f"{len(exc.issues)} error(s) in {escape(str(fleet_file))}")
        raise SystemExit(1) from None
    table = Table(title=f"{fleet_file}: {fleet.device_count():,} devices, seed {fleet.seed}")
    for column in ("type", "ids", "count", "transport", "codec", "interval", "metrics", "faults", "commands"):
        table.add_column(column)
    for template in fleet.devices:
        ids = template.device_ids()
        table.add_row(
            template.type,
            ids[0] if len(ids) == 1 else f"{ids[0]} … {ids[-1]}",
            str(template.count),
            template.transport,
            template.codec,
            f"{template.interval:g}s",
            ", ".join(template.metrics),
            ", ".join(f.type for f in template.faults) or "-",
            ", ".join(template.commands) or "-",
        )
    out.print(table)
