"""Errors of the workflow and rule engine.

    FieldlineError
    └── WorkflowError                 base of every engine error
        ├── DefinitionError           a workflow or rules file is invalid (carries every problem, positioned)
        ├── ExpressionError           a condition or template does not compile (syntax, unknown name)
        ├── EvaluationError           a condition or template failed at run time (undefined value, wrong type)
        ├── InstanceNotFound          an instance id that the store does not know
        ├── InstanceStateError        an operation that the instance's status forbids (signal to a finished one)
        └── ActionError               an action failed; ``error`` names it for retry/catch matching

``ActionError.error`` is the name that ``retry.errors`` and ``catch.errors`` match (``States.Timeout``,
``Command.Nack``, ``Http.Status`` ...); ``retryable`` says whether a retry policy may try again at all.
"""

from __future__ import annotations

from typing import Any

from fieldline.errors import ConfigError, FieldlineError


class WorkflowError(FieldlineError):
    """Base of every error the engine raises."""


class DefinitionError(ConfigError, WorkflowError):
    """Raised when a workflow or rules file fails to load or validate; ``issues`` lists every problem."""


class ExpressionError(WorkflowError):
    """Raised when a condition or template cannot be compiled: bad syntax or a name not in scope."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(f"{message} in `{source}`")


class EvaluationError(WorkflowError):
    """Raised when a compiled condition or template fails on the values it was given."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(f"`{source}`: {message}")


class InstanceNotFound(WorkflowError):
    """Raised when an instance id is unknown."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"no workflow instance {instance_id!r}")


class InstanceStateError(WorkflowError):
    """Raised when an operation is not allowed in the instance's current status."""

    def __init__(self, instance_id: str, message: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"instance {instance_id}: {message}")


class ActionError(WorkflowError):
    """Raised by an action (or the runtime on its behalf) when it fails.

    ``error`` is the name retry and catch clauses match; ``cause`` a human explanation; ``retryable`` False for
    failures that cannot succeed on a later attempt (a template that references a missing value, a device that
    refused the command as invalid).
    """

    def __init__(
        self, error: str, cause: str, *, retryable: bool = True, details: dict[str, Any] | None = None
    ) -> None:
        self.error = error
        self.cause = cause
        self.retryable = retryable
        self.details = details or {}
        super().__init__(f"{error}: {cause}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "cause": self.cause,
            **({"details": self.details} if self.details else {}),
        }


# Error names the runtime itself raises.
TIMEOUT = "States.Timeout"
TASK_FAILED = "States.TaskFailed"
TRANSITION_BUDGET = "States.TransitionBudgetExceeded"
BRANCH_FAILED = "States.BranchFailed"
EXPRESSION_FAILED = "States.ExpressionFailed"
RESULT_TOO_LARGE = "States.ResultTooLarge"
WORKFLOW_TIMEOUT = "Workflow.Timeout"


class EngineNotRunning(WorkflowError):
    """Raised when an engine is used outside its ``async with`` block (before entering or after leaving it)."""
