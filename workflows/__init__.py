"""The workflow and rule engine shared by the edge agent and the cloud: YAML state machines and event rules,
compiled once, run on an injected clock, persisted after every transition.

The public names are imported on first use (PEP 562): an edge agent that only needs ``ActionError`` or the
topic matcher does not load the engine (Jinja2, httpx, croniter): 9 MB less memory for an agent without
automation.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ALERT": "workflows.rules",
    "ALERT_CLEARED": "workflows.rules",
    "ActionContext": "workflows.actions",
    "ActionError": "workflows.errors",
    "ActionRegistry": "workflows.actions",
    "Clock": "workflows.clock",
    "Condition": "workflows.expressions",
    "DefinitionError": "workflows.errors",
    "Engine": "workflows.runtime",
    "EngineNotRunning": "workflows.errors",
    "EvaluationError": "workflows.errors",
    "Event": "workflows.events",
    "ExpressionError": "workflows.errors",
    "FakeClock": "workflows.clock",
    "HistoryEntry": "workflows.instance",
    "Host": "workflows.actions",
    "Instance": "workflows.instance",
    "InstanceNotFound": "workflows.errors",
    "InstanceStateError": "workflows.errors",
    "InstanceStore": "workflows.store",
    "InstanceView": "workflows.runtime",
    "LoadedRules": "workflows.rules",
    "LoadedWorkflow": "workflows.loader",
    "LogNotifier": "workflows.actions",
    "MemoryStore": "workflows.store",
    "Notifier": "workflows.actions",
    "RuleEngine": "workflows.rules",
    "SQLiteStore": "workflows.sqlite_store",
    "Status": "workflows.instance",
    "StoreError": "workflows.sqlite_store",
    "SystemClock": "workflows.clock",
    "Template": "workflows.expressions",
    "VariableError": "workflows.runtime",
    "VersionConflict": "workflows.runtime",
    "WebhookNotifier": "workflows.actions",
    "WorkflowError": "workflows.errors",
    "WorkflowNotFound": "workflows.runtime",
    "load_rules": "workflows.rules",
    "load_workflow": "workflows.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workflows' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
