"""Load workflow files: YAML → ``WorkflowDefinition`` → compiled ``Workflow``, every problem positioned.

``load_workflow`` raises ``DefinitionError`` listing every error (schema and meaning) as ``file:line:col``;
warnings (an unreachable state) come back with the workflow. The source text is kept so an engine can store
each deployed version and resume instances on exactly the definition they started with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fieldline.errors import ConfigError, ConfigIssue
from fieldline.yamlconf import PathKey, nearest_position, read_yaml, validate_data
from workflows.actions import ActionRegistry
from workflows.compiler import Problem, Workflow, compile_workflow
from workflows.definition import WorkflowDefinition
from workflows.errors import DefinitionError


@dataclass(frozen=True, slots=True)
class LoadedWorkflow:
    workflow: Workflow
    source: str
    warnings: list[ConfigIssue]


def positioned(
    problems: list[Problem], filename: str, positions: dict[PathKey, tuple[int, int]]
) -> list[ConfigIssue]:
    """Problems as issues with the line and column of the node (or its nearest existing ancestor)."""
    issues = []
    for problem in problems:
        pos = nearest_position(positions, problem.path)
        issues.append(
            ConfigIssue(
                filename,
                pos[0] if pos else None,
                pos[1] if pos else None,
                ".".join(str(p) for p in problem.path),
                problem.message,
                problem.severity,
            )
        )
    issues.sort(key=lambda i: (i.line is None, i.line or 0, i.column or 0))
    return issues


def read_source(path: str | Path, text: str | None) -> str:
    """The file's text (or ``text`` when given); raises ``DefinitionError`` when it cannot be read."""
    if text is not None:
        return text
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([ConfigIssue(str(path), None, None, "", f"cannot read: {exc}")]) from exc


def load_workflow(
    path: str | Path, registry: ActionRegistry | None = None, *, text: str | None = None
) -> LoadedWorkflow:
    """Load and compile one workflow file; raises ``DefinitionError`` with every error found."""
    filename = str(path)
    text = read_source(path, text)
    try:
        data, positions = read_yaml(filename, text=text)
        definition = validate_data(WorkflowDefinition, data, filename, positions)
    except ConfigError as exc:
        raise DefinitionError(exc.issues) from exc
    workflow, problems = compile_workflow(definition, registry or ActionRegistry())
    issues = positioned(problems, filename, positions)
    if workflow is None:
        raise DefinitionError(issues)
    return LoadedWorkflow(workflow, text, [i for i in issues if i.severity == "warning"])
