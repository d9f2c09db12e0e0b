"""The workflow and rules files an agent runs: found, loaded and compiled before anything starts.

``load_automation`` reads what ``automation.workflows`` and ``automation.rules`` name (a directory contributes
its own ``*.yaml`` workflow files, or ``*.rules.yaml`` rules files) and compiles each with the agent's action
registry. A file that fails to load is set aside as a ``DisabledFile`` carrying every problem positioned as
``file:line:col``, and so is a file that defines a rule id, or a workflow id and version, that an earlier file
already defines differently. The agent and ``fieldline edge check`` share this function, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_agent.config import AutomationConfig
from fieldline.durations import Duration
from fieldline.errors import ConfigIssue
from fieldline.yamlconf import PathKey, nearest_position, read_yaml
from workflows import ActionRegistry, DefinitionError, LoadedRules, LoadedWorkflow, load_rules, load_workflow
from workflows.actions import ActionContext, CommandAction, CommandConfig
from workflows.definition import MessageTrigger

FileKind = Literal["workflow", "rules"]
RULES_SUFFIX = ".rules.yaml"


class EdgeCommandConfig(CommandConfig):
    timeout: Duration | None = None  # type: ignore[assignment]  # None: the agent's command_ack_timeout


class EdgeCommandAction(CommandAction):
    """The ``command`` action, whose ``timeout`` defaults to the agent's ``automation.command_ack_timeout``."""

    config = EdgeCommandConfig

    def __init__(self, default_timeout: float) -> None:
        self.default_timeout = default_timeout

    async def run(self, config: EdgeCommandConfig, ctx: ActionContext) -> Any:
        if config.timeout is None:
            config = config.model_copy(update={"timeout": self.default_timeout})
        return await super().run(config, ctx)


def action_registry(command_ack_timeout: float) -> ActionRegistry:
    """The built-in actions, with ``command`` taking the agent's default acknowledgement timeout."""
    registry = ActionRegistry()
    registry.register(EdgeCommandAction(command_ack_timeout))
    return registry


@dataclass(frozen=True, slots=True)
class DisabledFile:
    """A file the agent does not run, with every problem found in it."""

    file: str
    kind: FileKind
    issues: tuple[ConfigIssue, ...]

    @property
    def reason(self) -> str:
        first = self.issues[0] if self.issues else None
        more = f" (and {len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        return f"{first}{more}" if first else "failed to load"


@dataclass
class AutomationFiles:
    """What ``load_automation`` found: the files ready to run, the disabled ones, and warnings."""

    registry: ActionRegistry
    workflows: list[tuple[str, LoadedWorkflow]] = field(default_factory=list)
    rules: list[LoadedRules] = field(default_factory=list)
    disabled: list[DisabledFile] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)

    def disable(self, file: str | Path, kind: FileKind, issues: list[ConfigIssue]) -> None:
        self.disabled.append(DisabledFile(str(file), kind, tuple(issues)))

    def message_filters(self) -> list[str]:
        """The MQTT topic filters of the ``message`` rules and the workflows' ``message`` triggers, each once:
        what the agent subscribes to on the local broker to feed them."""
        filters = [rule.topic for loaded in self.rules for rule in loaded.rules if rule.topic is not None]
        filters += [
            trigger.spec.topic
            for _, loaded in self.workflows
            for trigger in loaded.workflow.triggers
            if isinstance(trigger.spec, MessageTrigger)
        ]
        return list(dict.fromkeys(filters))

    @property
    def problems(self) -> list[ConfigIssue]:
        """Every problem of every disabled file, in order."""
        return [issue for disabled in self.disabled for issue in disabled.issues]


def load_automation(config: AutomationConfig) -> AutomationFiles:
    """Find, load and compile the configured files; never raises for a bad file (it is disabled)."""
    found = AutomationFiles(action_registry(config.command_ack_timeout))
    workflow_files, issues = _find(config.workflows, "workflow")
    rules_files, more = _find(config.rules, "rules")
    found.warnings += issues + more
    versions: dict[tuple[str, str], tuple[Path, str]] = {}
    for path in workflow_files:
        try:
            loaded = load_workflow(path, found.registry)
        except DefinitionError as exc:
            found.disable(path, "workflow", exc.issues)
            continue
        found.warnings += loaded.warnings
        key = (loaded.workflow.id, loaded.workflow.version)
        first = versions.setdefault(key, (path, loaded.source))
        if first[0] == path:
            found.workflows.append((str(path), loaded))
        elif first[1] != loaded.source:
            message = (
                f"workflow {key[0]!r} version {key[1]} is also defined, differently, in {first[0]}: "
                "give one of them a new version"
            )
            found.disable(path, "workflow", [positioned_issue(path, loaded.source, ("version",), message)])
    rule_files: dict[str, Path] = {}
    for path in rules_files:
        try:
            rules = load_rules(path, found.registry)
        except DefinitionError as exc:
            found.disable(path, "rules", exc.issues)
            continue
        found.warnings += rules.warnings
        clashes = [
            positioned_issue(
                path, rules.source, ("rules", index, "id"), f"rule id {rule.id!r} is also defined in {other}"
            )
            for index, rule in enumerate(rules.rules)
            if (other := rule_files.get(rule.id)) is not None
        ]
        if clashes:
            found.disable(path, "rules", clashes)
            continue
        rule_files.update(dict.fromkeys((rule.id for rule in rules.rules), path))
        found.rules.append(rules)
    return found


def positioned_issue(path: str | Path, source: str, at: PathKey, message: str) -> ConfigIssue:
    """An issue at the node ``at`` of a file that loaded (its positions are read again: this is rare)."""
    _, positions = read_yaml(path, text=source)
    pos = nearest_position(positions, at)
    return ConfigIssue(
        str(path), pos[0] if pos else None, pos[1] if pos else None, ".".join(map(str, at)), message
    )


def _find(paths: list[Path], kind: FileKind) -> tuple[list[Path], list[ConfigIssue]]:
    """The files named, and the files of ``kind`` directly inside the directories named, each once, in order."""
    files: list[Path] = []
    seen: set[Path] = set()
    issues: list[ConfigIssue] = []
    pattern = f"*{RULES_SUFFIX}" if kind == "rules" else "*.yaml"
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _is_kind(p, kind))
            if not found:
                issues.append(
                    ConfigIssue(str(path), None, None, "", f"no {pattern} files in this directory", "warning")
                )
        else:
            found = [path]  # a missing file is reported when it fails to load
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    return files, issues


def _is_kind(path: Path, kind: FileKind) -> bool:
    is_rules = path.name.endswith(RULES_SUFFIX)
    return is_rules if kind == "rules" else path.suffix == ".yaml" and not is_rules
