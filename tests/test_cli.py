"""The ``fieldline`` command as a user runs it: a real subprocess per call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent.yaml"


def fieldline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldline", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_subcommand() -> None:
    result = fieldline("--help")
    assert result.returncode == 0
    for name in ("edge", "demo", "cloud", "sim", "certs", "workflow"):
        assert name in result.stdout


def test_subcommand_help_and_version() -> None:
    """Subcommands are typer apps inside the lazy group: their help, exits and usage errors pass through it."""
    for name in ("edge", "workflow", "cloud", "sim"):
        result = fieldline(name, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage: fieldline " + name in result.stdout
    assert fieldline("workflow", "validate").returncode == 2  # missing argument: a usage error
    version = fieldline("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("fieldline, version ")


def test_edge_check_accepts_the_example() -> None:
    result = fieldline("edge", "check", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_edge_check_reports_errors_with_positions(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("gateway: {id: gw-1}\nuplink: {inflight: 0}\n")
    result = fieldline("edge", "check", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}:2:20: uplink.inflight: Input should be greater than or equal to 1" in result.stderr


def test_edge_outbox_shows_the_backlog(tmp_path: Path) -> None:
    from edge_agent.outbox import KIND_CODES, Outbox
    from edge_agent.store import connect
    from fieldline.wire import RawRecord, RecordKind, encode_record

    db = tmp_path / "edge.db"
    conn = connect(db, "normal")
    box = Outbox(conn, max_bytes=10**6, batch_max_bytes=10**5, batch_max_age=1)
    box.add(
        [(KIND_CODES[RecordKind.RAW], 0.0, encode_record(RawRecord("d", 1.0, {"n": i}))) for i in range(5)]
    )
    box.seal_due(0.0, force=True)
    conn.close()
    config = tmp_path / "agent.yaml"
    config.write_text(f"gateway: {{id: gw-1}}\nstorage: {{path: {db}}}\n")
    result = fieldline("edge", "outbox", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "raw" in result.stdout
    assert "next seq 2" in result.stdout
