"""The workflow file, as typed models: structure only.

Conditions, templates and action configurations stay strings and dicts here; ``compiler.py`` turns a validated
``WorkflowDefinition`` into a runnable ``Workflow``, compiling each expression once and checking what a schema
cannot (transitions to undefined states, unknown names, unknown action types). Every state and trigger has an
explicit ``type:`` so an error names exactly what was expected.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fieldline.durations import Duration

_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
IDENT = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariableSpec(Strict):
    """A workflow variable: its type, default and whether a start must supply it."""

    type: Literal["string", "number", "boolean", "object", "list"] = "string"
    default: Any = None
    required: bool = False
    description: str = ""


class ActionSpec(BaseModel):
    """One action: ``type`` picks the registered action kind, the other keys are that kind's configuration."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    result_as: str | None = Field(None, pattern=NAME)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RetryPolicy(Strict):
    """Retry a failed state: ``errors`` it applies to (``*`` for all), attempts and exponential backoff."""

    errors: list[str] = ["*"]
    max_attempts: int = Field(3, ge=1, le=1000)
    interval: Duration = 1.0
    backoff_rate: float = Field(2.0, ge=1.0)
    max_delay: Duration | None = None
    jitter: float = Field(0.0, ge=0.0, le=1.0, description="fraction of each delay drawn at random")


class CatchClause(Strict):
    """Go to ``next`` when the state fails with one of ``errors``; the error is stored in ``result_as``."""

    errors: list[str] = ["*"]
    next: str
    result_as: str = Field("error", pattern=NAME)


class StateBase(Strict):
    comment: str = ""
    timeout: Duration | None = None


class Transition(StateBase):
    """A state that goes on to ``next`` or ends the machine (``end: true``)."""

    next: str | None = None
    end: bool = False

    @model_validator(mode="after")
    def _next_or_end(self) -> Transition:
        if self.next is None and not self.end:
            raise ValueError("a state must say `next: <state>` or `end: true`")
        if self.next is not None and self.end:
            raise ValueError("`next` and `end: true` exclude each other")
        return self


class Recoverable(Transition):
    retry: list[RetryPolicy] = []
    catch: list[CatchClause] = []


class TaskState(Recoverable):
    type: Literal["task"]
    actions: list[ActionSpec] = Field(min_length=1)


class ChoiceBranch(Strict):
    when: str
    next: str


class ChoiceState(StateBase):
    type: Literal["choice"]
    choices: list[ChoiceBranch] = Field(min_length=1)
    default: str | None = None


class SubMachine(Strict):
    """A state machine inside a ``parallel`` branch or a ``map`` iteration."""

    start_at: str
    states: dict[Annotated[str, Field(pattern=IDENT)], State]


class ParallelState(Recoverable):
    type: Literal["parallel"]
    branches: list[SubMachine] = Field(min_length=1)
    result_as: str | None = Field(None, pattern=NAME)


class MapState(Recoverable):
    type: Literal["map"]
    items: str = Field(description="expression giving the list to iterate")
    item_as: str = Field("item", pattern=NAME)
    max_concurrency: int = Field(1, ge=1, le=1000)
    iterator: SubMachine
    result_as: str | None = Field(None, pattern=NAME)


class WaitForEvent(Strict):
    type: str = Field(description="event type to wait for")
    condition: str | None = None
    timeout: Duration | None = None
    on_timeout: str | None = None
    result_as: str = Field("event", pattern=NAME)

    @model_validator(mode="after")
    def _timeout_target(self) -> WaitForEvent:
        if self.on_timeout is not None and self.timeout is None:
            raise ValueError("`on_timeout` needs a `timeout`")
        return self


class WaitState(Transition):
    type: Literal["wait"]
    seconds: Duration | None = None
    until: str | None = Field(None, description="template giving an RFC 3339 time or epoch seconds")
    event: WaitForEvent | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> WaitState:
        given = [k for k in ("seconds", "until", "event") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a wait needs exactly one of `seconds`, `until` or `event`")
        return self


class SucceedState(StateBase):
    type: Literal["succeed"]
    output: Any = None


class FailState(StateBase):
    type: Literal["fail"]
    error: str = "Workflow.Failed"
    cause: str = ""


State = Annotated[
    TaskState | ChoiceState | ParallelState | MapState | WaitState | SucceedState | FailState,
    Field(discriminator="type"),
]
SubMachine.model_rebuild()


# --- triggers -------------------------------------------------------------------------------------------


class TriggerBase(Strict):
    variables: dict[Annotated[str, Field(pattern=NAME)], Any] = Field(
        default_factory=dict, description="variable name -> template over the trigger's event"
    )


class EventTrigger(TriggerBase):
    type: Literal["event"]
    event: str = Field(description="event type")
    condition: str | None = None


class ScheduleTrigger(TriggerBase):
    type: Literal["schedule"]
    cron: str | None = None
    timezone: str = "UTC"
    every: Duration | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleTrigger:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule needs exactly one of `cron` or `every`")
        if self.every is not None and self.every <= 0:
            raise ValueError("`every` must be positive")
        return self


class ApiTrigger(TriggerBase):
    type: Literal["api"]


class DeviceSelector(Strict):
    id: str | None = Field(None, description="device id glob, e.g. boiler-*")
    type: str | None = Field(None, description="device type")


class DeviceStateTrigger(TriggerBase):
    type: Literal["device_state"]
    devices: DeviceSelector = DeviceSelector()
    from_: str | None = Field(None, alias="from")
    to: str | None = None


class MessageTrigger(TriggerBase):
    type: Literal["message"]
    topic: str
    condition: str | None = None

    @field_validator("topic")
    @classmethod
    def _filter(cls, topic: str) -> str:
        from workflows.topics import validate_filter

        validate_filter(topic)
        return topic


Trigger = Annotated[
    EventTrigger | ScheduleTrigger | ApiTrigger | DeviceStateTrigger | MessageTrigger,
    Field(discriminator="type"),
]


class ErrorHandler(Strict):
    """Workflow-level ``on_error``: run ``actions`` and continue at ``next`` (or fail when absent)."""

    actions: list[ActionSpec] = []
    next: str | None = None
    result_as: str = Field("error", pattern=NAME)


class WorkflowDefinition(Strict):
    id: str = Field(pattern=IDENT)
    name: str = ""
    version: str = "1.0.0"
    description: str = ""
    variables: dict[Annotated[str, Field(pattern=NAME)], VariableSpec] = {}
    triggers: list[Trigger] = []
    start_at: str
    states: dict[Annotated[str, Field(pattern=IDENT)], State] = Field(min_length=1)
    on_error: ErrorHandler | None = None
    timeout: Duration | None = None
    max_transitions: int | None = Field(
        None, ge=1, description="transitions an instance may make in its whole life (no limit by default)"
    )
    max_transitions_between_waits: int = Field(
        1000,
        ge=1,
        description="transitions allowed without passing a wait: stops a runaway loop, lets a monitoring loop "
        "that waits for events run forever",
    )
    metadata: dict[str, Any] = {}

    @field_validator("version")
    @classmethod
    def _semver(cls, version: str) -> str:
        if not _SEMVER.fullmatch(version):
            raise ValueError(f"version {version!r} is not semantic (MAJOR.MINOR.PATCH)")
        return version
