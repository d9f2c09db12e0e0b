"""``fieldline workflow``: validate workflow and rules files, write their JSON Schemas, dry-run and draw workflows.

Exit codes: 0 success; 1 the check failed (``validate`` found errors, or warnings with ``--strict``; a ``run``
ended with a failed instance); 2 bad usage, or a file that ``run`` or ``graph`` cannot load.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from fieldline.durations import parse_duration
from fieldline.errors import ConfigError, ConfigIssue
from fieldline.yamlconf import PathKey, nearest_position, parse_yaml
from workflows.actions import ActionRegistry
from workflows.definition import WorkflowDefinition
from workflows.errors import DefinitionError
from workflows.events import Event
from workflows.loader import LoadedWorkflow, load_workflow
from workflows.rules import load_rules

app = typer.Typer(
    help="Validate, dry-run and draw workflows and rules.", no_args_is_help=True, add_completion=False
)
errors = Console(stderr=True, soft_wrap=True, highlight=False)
YAML_SUFFIXES = (".yaml", ".yml")


class Kind(StrEnum):
    workflow = "workflow"
    rules = "rules"


# --- validate -------------------------------------------------------------------------------------------


def yaml_files(paths: list[Path]) -> tuple[list[Path], list[ConfigIssue]]:
    """The files named and the ``*.yaml``/``*.yml`` files under the directories named, each once, in order;
    with a warning for a directory that holds none."""
    files: list[Path] = []
    seen: set[Path] = set()
    issues: list[ConfigIssue] = []
    for path in paths:
        found = (
            sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
            if path.is_dir()
            else [path]
        )
        if not found:
            issues.append(
                ConfigIssue(
                    str(path), None, None, "", "no *.yaml or *.yml files in this directory", "warning"
                )
            )
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    return files, issues


class Checker:
    """Loads workflow and rules files like the engine does and collects every problem, including ids that two
    files define (the same workflow id and version, the same rule id), reported at the later definition."""

    def __init__(self, registry: ActionRegistry | None = None) -> None:
        self.registry = registry or ActionRegistry()
        self.issues: list[ConfigIssue] = []
        self.kinds: Counter[Kind] = Counter()
        self._defined: dict[tuple[str, ...], tuple[str, str]] = {}

    def check(self, path: Path) -> None:
        filename = str(path)
        try:
            text = path.read_text(encoding="utf-8")
            data, positions = parse_yaml(text, filename)
        except OSError as exc:
            self.issues.append(ConfigIssue(filename, None, None, "", f"cannot read: {exc.strerror}"))
            return
        except UnicodeDecodeError as exc:
            self.issues.append(ConfigIssue(filename, None, None, "", f"not UTF-8 text: {exc}"))
            return
        except ConfigError as exc:
            self.issues.extend(exc.issues)
            return
        kind = Kind.rules if isinstance(data, dict) and "rules" in data else Kind.workflow
        self.kinds[kind] += 1
        found = self._load(kind, filename, text)
        for key, what, path in _ids(kind, data):
            found += self._once(key, what, filename, positions, path)
        found.sort(key=lambda i: (i.line is None, i.line or 0, i.column or 0))
        self.issues.extend(found)

    def _load(self, kind: Kind, filename: str, text: str) -> list[ConfigIssue]:
        """The file's problems as the engine's loader reports them: errors, or the warnings of a valid file."""
        try:
            if kind is Kind.rules:
                return list(load_rules(filename, self.registry, text=text).warnings)
            return list(load_workflow(filename, self.registry, text=text).warnings)
        except DefinitionError as exc:
            return list(exc.issues)

    def _once(
        self,
        key: tuple[str, ...],
        what: str,
        filename: str,
        positions: dict[PathKey, tuple[int, int]],
        path: PathKey,
    ) -> list[ConfigIssue]:
        """Remember where ``key`` is defined; an issue when another file defined it already (the loader reports
        an id repeated inside one file)."""
        line, column = nearest_position(positions, path) or (None, None)
        if key not in self._defined:
            self._defined[key] = (filename, filename if line is None else f"{filename}:{line}:{column}")
            return []
        first_file, first = self._defined[key]
        if first_file == filename:
            return []
        message = f"duplicate {what} (first defined at {first})"
        return [ConfigIssue(filename, line, column, ".".join(map(str, path)), message)]


def _ids(kind: Kind, data: Any) -> list[tuple[tuple[str, ...], str, PathKey]]:
    """The ids a file defines, read from the YAML itself so that a file with other errors is still compared:
    (key, description, path of the ``id`` node)."""
    if not isinstance(data, dict):
        return []
    if kind is Kind.workflow:
        if not isinstance(data.get("id"), str):
            return []
        version = str(data.get("version", WorkflowDefinition.model_fields["version"].default))
        return [(("workflow", data["id"], version), f"workflow id {data['id']!r} version {version}", ("id",))]
    rules = data.get("rules")
    return [
        (("rule", rule["id"]), f"rule id {rule['id']!r}", ("rules", index, "id"))
        for index, rule in enumerate(rules if isinstance(rules, list) else [])
        if isinstance(rule, dict) and isinstance(rule.get("id"), str)
    ]


def _plural(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else word + 's'}"


@app.command()
def validate(
    paths: Annotated[
        list[Path], typer.Argument(help="Workflow or rules files, or directories to search for *.yaml/*.yml.")
    ],
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
) -> None:
    """Check workflow and rules files; print every problem as FILE:LINE:COL: message.

    A file with a top-level `rules:` key is a rules file, any other a workflow. Exit 1 when there is an error
    (or, with --strict, a warning).
    """
    files, issues = yaml_files(paths)
    checker = Checker()
    checker.issues.extend(issues)
    for file in files:
        checker.check(file)
    for issue in checker.issues:
        typer.echo(str(issue))
    n_errors = sum(i.severity == "error" for i in checker.issues)
    n_warnings = len(checker.issues) - n_errors
    checked = (
        f"checked {_plural(len(files), 'file')} ({_plural(checker.kinds[Kind.workflow], 'workflow')}, "
        f"{_plural(checker.kinds[Kind.rules], 'rules file')})"
    )
    failed = n_errors > 0 or (strict and n_warnings > 0)
    if checker.issues:
        colour = "red" if failed else "yellow"
        counts = f"{_plural(n_errors, 'error')}, {_plural(n_warnings, 'warning')}"
        errors.print(f"{checked}: [{colour}]{counts}[/{colour}]")
    else:
        errors.print(f"{checked}: [green]ok[/green]")
    raise typer.Exit(1 if failed else 0)


# --- schema ---------------------------------------------------------------------------------------------


def _schema(kind: Kind) -> dict[str, Any]:
    from workflows.schema import rules_schema, workflow_schema

    return workflow_schema() if kind is Kind.workflow else rules_schema()


@app.command()
def schema(
    out: Annotated[
        Path | None,
        typer.Option(help="Directory to write workflow.schema.json and rules.schema.json into [default: .]"),
    ] = None,
    kind: Annotated[
        Kind | None, typer.Option(help="Only this kind; printed on stdout unless --out is given.")
    ] = None,
) -> None:
    """Write the JSON Schemas of workflow and rules files, for editors and CI."""
    if kind is not None and out is None:
        typer.echo(json.dumps(_schema(kind), indent=2))
        return
    directory = out or Path()
    directory.mkdir(parents=True, exist_ok=True)
    for each in [kind] if kind is not None else list(Kind):
        target = directory / f"{each.value}.schema.json"
        target.write_text(json.dumps(_schema(each), indent=2) + "\n", encoding="utf-8")
        errors.print(f"wrote {target}")


# --- run and graph --------------------------------------------------------------------------------------


def _load(path: Path) -> LoadedWorkflow:
    """Load a workflow for ``run``/``graph``; print its warnings, or its errors and exit 2."""
    try:
        loaded = load_workflow(path)
    except DefinitionError as exc:
        for issue in exc.issues:
            errors.print(str(issue), markup=False)
        raise typer.Exit(2) from None
    for issue in loaded.warnings:
        errors.print(str(issue), markup=False)
    return loaded


def _event(text: str) -> Event:
    """One event from its JSON text; raises ValueError saying what is wrong."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ValueError('an event is an object with a "type" (and "data", "device_id", "ts")')
    if not isinstance(raw.get("data", {}), dict) or not isinstance(raw.get("ts", 0), int | float):
        raise ValueError('an event\'s "data" is an object and its "ts" a number of seconds')
    return Event.from_dict(raw)


def _events(texts: list[str], path: Path | None) -> list[Event]:
    """Events from the JSON-lines file, then from each ``--event``."""
    events: list[Event] = []
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise typer.BadParameter(f"{path}: cannot read: {exc.strerror}", param_hint="--events") from None
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    events.append(_event(line))
                except ValueError as exc:
                    raise typer.BadParameter(f"{path}:{n}: {exc}", param_hint="--events") from None
    for text in texts:
        try:
            events.append(_event(text))
        except ValueError as exc:
            raise typer.BadParameter(f"{text}: {exc}", param_hint="--event") from None
    return events


def _variables(pairs: list[str]) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint="--var")
        try:
            variables[name] = json.loads(value)
        except json.JSONDecodeError:
            variables[name] = value
    return variables


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Workflow file.")],
    event: Annotated[
        list[str] | None,
        typer.Option(help='An event as JSON, e.g. \'{"type": "telemetry", "data": {"t": 91}}\'; repeatable.'),
    ] = None,
    events: Annotated[Path | None, typer.Option(help="A file of events, one JSON object per line.")] = None,
    var: Annotated[
        list[str] | None,
        typer.Option(
            help="A variable as NAME=VALUE (VALUE is JSON or else a string) for the explicit start made when "
            "no event starts an instance; repeatable."
        ),
    ] = None,
    horizon: Annotated[
        str, typer.Option(help="How far to run the simulated clock (30s, 5m, 7d ...).")
    ] = "7d",
) -> None:
    """Dry-run a workflow on a simulated clock with stub actions and print its trace.

    Events from --events come first, then each --event; an event with a later "ts" moves the clock. When no
    trigger starts an instance, one is started with the --var variables. Commands are acknowledged, HTTP calls
    answer 200, notifications are recorded: nothing leaves the process. Exit 1 when an instance fails.
    """
    from workflows.dryrun import dry_run
    from workflows.instance import Status

    try:
        seconds = parse_duration(horizon)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--horizon") from None
    feed = _events(event or [], events)
    variables = _variables(var or [])
    loaded = _load(file)
    result = asyncio.run(dry_run(loaded, feed, variables=variables, horizon=seconds))
    for line in result.trace:
        typer.echo(line)
    top = [i for i in result.instances if i.parent_id is None]
    for instance in top:
        detail = ""
        if instance.error:
            detail = f": {instance.error.get('error')}: {instance.error.get('cause')}"
        elif instance.status.terminal:
            detail = f": output {json.dumps(instance.output, default=str)}"
        colour = {Status.SUCCEEDED: "green", Status.FAILED: "red"}.get(instance.status, "yellow")
        errors.print(
            f"instance {instance.id} [{colour}]{instance.status.value}[/{colour}] "
            + escape(f"in state {instance.state}{detail}")
        )
    raise typer.Exit(1 if any(i.status is Status.FAILED for i in top) else 0)


@app.command()
def graph(file: Annotated[Path, typer.Argument(help="Workflow file.")]) -> None:
    """Print the workflow as a Mermaid state diagram."""
    from workflows.graph import mermaid

    typer.echo(mermaid(_load(file).workflow), nl=False)
