"""``fieldline workflow run``: a dry run on the simulated clock, its trace printed, exit 1 when it fails."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from workflows.cli import app
from workflows.dryrun import dry_run
from workflows.events import Event
from workflows.loader import load_workflow

VALID = Path(__file__).parent / "valid"
BOILER = VALID / "boiler-overheat.yaml"
HOT = {"type": "telemetry", "device_id": "boiler-7", "data": {"temperature": 95}, "ts": 1_700_000_000}
COOL = {"type": "telemetry", "device_id": "boiler-7", "data": {"temperature": 70}, "ts": 1_700_000_060}


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["run", *args], env={"COLUMNS": "400"})  # error boxes on one line


def trace(events: list[dict[str, Any]], variables: dict[str, Any] | None = None) -> list[str]:
    """The trace of the same dry run, called directly."""
    loaded = load_workflow(BOILER)
    result = asyncio.run(dry_run(loaded, [Event.from_dict(e) for e in events], variables=variables))
    return result.trace


def test_prints_the_dry_run_trace_and_fails_when_the_instance_fails() -> None:
    """Nothing cools the boiler: the event wait times out after 15 simulated minutes and the workflow fails."""
    result = run(str(BOILER), "--event", json.dumps(HOT))
    assert result.stdout.splitlines() == trace([HOT])
    assert "wait_cool" in result.stdout
    assert "Boiler.Overheat" in result.stdout
    assert result.stderr.strip() == "instance i1 failed in state failed: Boiler.Overheat: did not cool down"
    assert result.exit_code == 1


def test_events_file_and_succeeding_run(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(HOT) + "\n\n" + json.dumps(COOL) + "\n")
    result = run(str(BOILER), "--events", str(events))
    assert result.stdout.splitlines() == trace([HOT, COOL])
    assert result.stderr.startswith("instance i1 succeeded in state cooled")
    assert result.exit_code == 0


def test_variables_for_an_explicit_start() -> None:
    """An event that no trigger takes: the instance is started explicitly with the --var variables."""
    result = run(str(BOILER), "--event", '{"type": "ping"}', "--var", "boiler=b1", "--var", "limit=120")
    assert '"variables": {"boiler": "b1", "limit": 120}' in result.stdout
    assert result.stdout.splitlines() == trace([{"type": "ping"}], variables={"boiler": "b1", "limit": 120})
    assert result.exit_code == 1  # limit 120: the choice takes its default, which pages and fails


def test_horizon_stops_the_clock() -> None:
    result = run(str(BOILER), "--event", json.dumps(HOT), "--horizon", "10m")
    assert result.stderr.strip() == "instance i1 waiting in state wait_cool"
    assert result.exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--event", "{bad"], "invalid JSON"),
        (["--event", '{"data": {}}'], 'an event is an object with a "type"'),
        (["--event", '{"type": "x", "ts": "now"}'], '"ts" a number'),
        (["--horizon", "soon"], "invalid duration 'soon'"),
        (["--var", "limit"], "expected NAME=VALUE"),
        (["--events", "missing.jsonl"], "cannot read"),
    ],
)
def test_bad_usage_exits_2(args: list[str], message: str) -> None:
    result = run(str(BOILER), *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_bad_line_in_events_file_is_located(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(HOT) + "\n[1, 2]\n")
    result = run(str(BOILER), "--events", str(events))
    assert result.exit_code == 2
    assert f"{events}:2: an event is an object" in result.stderr


def test_invalid_workflow_exits_2() -> None:
    broken = Path(__file__).parent / "broken" / "missing_start_state.yaml"
    result = run(str(broken), "--event", json.dumps(HOT))
    assert result.exit_code == 2
    assert "start state 'begin' is not defined" in result.stderr
    assert result.stdout == ""
