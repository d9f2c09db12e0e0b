"""``fieldline edge``: run the agent, validate its configuration, enroll it with the cloud's PKI, inspect its
outbox and quarantine."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fieldline.errors import ConfigError, ConfigIssue

app = typer.Typer(help="Run and inspect the gateway agent.", no_args_is_help=True, add_completion=False)
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Agent configuration file (agent.yaml).")]
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # one line per error, never wrapped


def _load(path: Path):
    from edge_agent.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        _print_issues(exc.issues, "[red]error[/red]")
        raise SystemExit(2) from None


def _print_issues(issues: list[ConfigIssue], label: str) -> None:
    for issue in issues:
        errors.print(f"{label} {issue}", highlight=False, markup=True)


@app.command()
def check(config: ConfigOption) -> None:
    """Validate the configuration and its rules and workflows without running; every problem names file, line
    and field. Exits 2 when the agent would refuse to start (with ``automation.strict``, a bad automation file)."""
    cfg = _load(config)
    from edge_agent.pipeline.base import ListSink
    from edge_agent.pipeline.pipeline import PipelineRouter

    PipelineRouter(cfg.pipelines, ListSink(), lambda *a: None, lambda _d: None)  # builds every step
    summary = ""
    if cfg.automation.configured:
        from edge_agent.automation_files import load_automation

        files = load_automation(cfg.automation)
        strict = cfg.automation.strict
        _print_issues(files.warnings, "[yellow]warning[/yellow]")
        _print_issues(files.problems, "[red]error[/red]" if strict else "[yellow]disabled[/yellow]")
        if strict and files.disabled:
            raise SystemExit(2)
        rules = sum(len(r.rules) for r in files.rules)
        summary = f", {len(files.workflows)} workflow(s), {rules} rule(s)"
        if files.disabled:
            summary += f", {len(files.disabled)} automation file(s) disabled"
    from edge_agent.compiled import compiled_modules

    compiled = len(compiled_modules())
    build = f"{compiled} compiled modules" if compiled else "plain Python (no compiled modules)"
    console.print(
        f"[green]ok[/green] {config}: gateway {cfg.gateway.id}, {len(cfg.pipelines)} pipeline(s), "
        f"uplink {cfg.uplink.url if cfg.uplink.enabled else 'disabled'}{summary}; {build}",
        soft_wrap=True,
    )


@app.command()
def run(config: ConfigOption) -> None:
    """Run the agent until SIGTERM/SIGINT; on shutdown open windows are flushed into the outbox."""
    cfg = _load(config)
    from edge_agent.agent import Agent
    from fieldline import gc_policy
    from fieldline.logs import setup_logging

    setup_logging(cfg.logging.level, cfg.logging.format)

    async def main() -> None:
        async with Agent(cfg) as agent:
            gc_policy.apply()  # this process runs one agent for its whole life
            await agent.run_until_signal()

    try:
        asyncio.run(main())
    except ConfigError as exc:  # automation.strict: a rules or workflow file failed to load or deploy
        _print_issues(exc.issues, "[red]error[/red]")
        raise SystemExit(2) from None


@app.command()
def enroll(
    config: ConfigOption,
    token: Annotated[str, typer.Option(help="The one-time enrollment token an operator created.")],
    cloud: Annotated[
        str | None, typer.Option(help="The cloud core's API, http(s)://host:port (default: pki.cloud_url).")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="CA bundle that verifies an https cloud URL (default: pki.ca).")
    ] = None,
) -> None:
    """Get the gateway's certificate: generate its key here (it never leaves), send a CSR for CN=<gateway.id> with
    the token, and store key, certificate and chain at uplink.tls.key/cert (and uplink.tls.ca if missing)."""
    cfg = _load(config)
    from edge_agent.enrollment import IdentityFiles
    from edge_agent.enrollment import enroll as enroll_gateway
    from edge_agent.errors import PkiError

    url = cloud or cfg.pki.cloud_url
    if url is None:
        errors.print("[red]error[/red] no cloud URL: pass --cloud or set pki.cloud_url", highlight=False)
        raise SystemExit(2)
    try:
        files = IdentityFiles.of(cfg)
    except ValueError as exc:
        errors.print(f"[red]error[/red] {config}: {exc}", highlight=False)
        raise SystemExit(2) from None
    ca_written = files.ca is not None and not files.ca.exists()
    try:
        issued = asyncio.run(
            enroll_gateway(
                cfg.gateway.id,
                files,
                cloud_url=url,
                token=token,
                ca_file=ca_file or cfg.pki.ca,
                key_kind=cfg.pki.key_kind,
                http_timeout=cfg.pki.timeout,
            )
        )
    except PkiError as exc:
        errors.print(f"[red]enrollment failed[/red] {escape(str(exc))}", highlight=False)
        raise SystemExit(1) from None
    not_after = issued.certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    console.print(
        f"[green]enrolled[/green] {cfg.gateway.id}: certificate {issued.serial} valid until {not_after}; "
        f"key {files.key} (0600), certificate {files.cert}"
        + (f", CA chain {files.ca}" if ca_written else ""),
        soft_wrap=True,
        highlight=False,
    )


@app.command()
def outbox(
    config: ConfigOption,
    quarantine: Annotated[int, typer.Option(help="Also list the N most recent quarantined messages.")] = 0,
) -> None:
    """Show the backlog: loose records and sealed batches per kind, drop counters, journal and quarantine."""
    cfg = _load(config)
    from edge_agent.outbox import CODE_KINDS
    from edge_agent.store import connect, meta_get

    path = cfg.database_path()
    if not path.exists():
        errors.print(f"no agent database at {path} (has the agent run?)")
        raise SystemExit(1)
    conn = connect(path, readonly=True)
    table = Table(title=f"outbox of {cfg.gateway.id} ({path})")
    for col in (
        "kind",
        "loose records",
        "loose bytes",
        "batches",
        "batched records",
        "oldest",
        "dropped (overflow)",
    ):
        table.add_column(col, justify="right" if col != "kind" else "left")
    loose = {
        k: (n, b)
        for k, n, b in conn.execute("SELECT kind, count(*), sum(length(data)) FROM records GROUP BY kind")
    }
    sealed = {
        k: (n, r, t)
        for k, n, r, t in conn.execute(
            "SELECT kind, count(*), sum(count), min(created) FROM batches GROUP BY kind"
        )
    }
    for code, kind in CODE_KINDS.items():
        n, b = loose.get(code, (0, 0))
        bn, br, oldest = sealed.get(code, (0, 0, None))
        when = dt.datetime.fromtimestamp(oldest, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if oldest else "-"
        dropped = meta_get(conn, f"dropped_records.{kind.value}", 0)
        table.add_row(kind.value, str(n), str(b or 0), str(bn), str(br or 0), when, str(dropped))
    console.print(table)
    seq = conn.execute("SELECT min(seq), max(seq) FROM batches").fetchone()
    journal = conn.execute("SELECT count(*) FROM journal").fetchone()[0]
    quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    console.print(
        f"next seq {meta_get(conn, 'next_seq', 1)}; pending seq range {seq[0]}..{seq[1]}; "
        f"journal {journal} points; quarantine {quarantined} messages"
    )
    if quarantine:
        q = Table(title="recent quarantine")
        for col in ("received", "source", "device", "reason", "detail", "size"):
            q.add_column(col)
        for received, source, device, reason, detail, size in conn.execute(
            "SELECT received, source, device, reason, detail, size FROM quarantine ORDER BY id DESC LIMIT ?",
            (quarantine,),
        ):
            q.add_row(
                dt.datetime.fromtimestamp(received, dt.UTC).strftime("%H:%M:%S"),
                source,
                device or "-",
                reason,
                detail[:80],
                str(size),
            )
        console.print(q)
    conn.close()
    sys.stdout.flush()
