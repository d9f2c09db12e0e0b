"""The workflow and rule engine shared by the edge agent and the cloud: YAML state machines and event rules,
compiled once, run on an injected clock, persisted after every transition."""

from workflows.actions import ActionContext, ActionRegistry, Host, LogNotifier, Notifier, WebhookNotifier
from workflows.clock import Clock, FakeClock, SystemClock
from workflows.errors import (
    ActionError,
    DefinitionError,
    EngineNotRunning,
    EvaluationError,
    ExpressionError,
    InstanceNotFound,
    InstanceStateError,
    WorkflowError,
)
from workflows.events import Event
from workflows.expressions import Condition, Template
from workflows.instance import HistoryEntry, Instance, Status
from workflows.loader import LoadedWorkflow, load_workflow
from workflows.rules import ALERT, ALERT_CLEARED, LoadedRules, RuleEngine, load_rules
from workflows.runtime import Engine, InstanceView, VariableError, VersionConflict, WorkflowNotFound
from workflows.sqlite_store import SQLiteStore, StoreError
from workflows.store import InstanceStore, MemoryStore

__all__ = [
    "ALERT",
    "ALERT_CLEARED",
    "ActionContext",
    "ActionError",
    "ActionRegistry",
    "Clock",
    "Condition",
    "DefinitionError",
    "Engine",
    "EngineNotRunning",
    "EvaluationError",
    "Event",
    "ExpressionError",
    "FakeClock",
    "HistoryEntry",
    "Host",
    "Instance",
    "InstanceNotFound",
    "InstanceStateError",
    "InstanceStore",
    "InstanceView",
    "LoadedRules",
    "LoadedWorkflow",
    "LogNotifier",
    "MemoryStore",
    "Notifier",
    "RuleEngine",
    "SQLiteStore",
    "Status",
    "StoreError",
    "SystemClock",
    "Template",
    "VariableError",
    "VersionConflict",
    "WebhookNotifier",
    "WorkflowError",
    "WorkflowNotFound",
    "load_rules",
    "load_workflow",
]
