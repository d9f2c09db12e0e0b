"""Actions: a registry of named kinds, each with a typed configuration and an async ``run``.

Workflows (``task`` states, ``on_error``) and rules use the same registry. Configuration fields that are
templates are compiled when the file loads (``TemplateStr``, ``TemplateData``) and rendered against the scope
when the action runs. What touches the outside world goes through the ``Host`` the engine was given (the agent
or the cloud), so the engine stays pure and a dry run swaps in a recording host.

Every run gets an ``idempotency_key`` (``instance:state:attempt:index`` for workflows,
``rule:device:firing:index`` for rules): the same action retried after a restart carries the same key, so a host
and a device that remember keys can make it at-most-once. ``command`` uses it as the command id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Protocol

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema

from fieldline.durations import Duration
from workflows.errors import ActionError, EvaluationError, ExpressionError
from workflows.events import Event
from workflows.expressions import Template, TemplateValue

log = logging.getLogger("fieldline.workflows.actions")


def _template(value: Any, info: ValidationInfo) -> Template:
    if isinstance(value, Template):
        return value
    if not isinstance(value, str | int | float | bool):
        raise ValueError("expected a string (a template)")
    try:
        return Template(str(value), known=(info.context or {}).get("known"))
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None


def _template_data(value: Any, info: ValidationInfo) -> TemplateValue:
    if isinstance(value, TemplateValue):
        return value
    try:
        return TemplateValue(value, known=(info.context or {}).get("known"))
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None


TemplateStr = Annotated[Template, BeforeValidator(_template), WithJsonSchema({"type": "string"})]
"""A string field that may hold ``{{ ... }}``; rendered when the action runs."""
TemplateData = Annotated[TemplateValue, BeforeValidator(_template_data), WithJsonSchema({})]
"""Any JSON-like value whose strings are templates."""


class ActionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Host(Protocol):
    """What the agent or the cloud provides to actions."""

    async def send_command(
        self,
        device_id: str,
        name: str,
        params: dict[str, Any],
        *,
        command_id: str,
        await_ack: bool,
        ack_timeout: float,
    ) -> dict[str, Any]:
        """Send a command; with ``await_ack`` return the device's ack, raising ``ActionError`` (``Command.Nack``,
        ``Command.Timeout``) when it refuses or stays silent."""
        ...

    async def publish(self, topic: str, payload: Any, *, qos: int, retain: bool) -> None: ...

    async def emit(self, event: Event) -> None: ...


class Notifier(Protocol):
    async def notify(self, message: str, *, severity: str, data: Mapping[str, Any]) -> None: ...


class Control(Protocol):
    """The engine's own operations that actions may call."""

    async def start_workflow(
        self, workflow_id: str, variables: dict[str, Any], *, parent: str | None, request_id: str
    ) -> str: ...

    async def signal(self, instance_id: str, event: Event) -> None: ...


@dataclass
class ActionContext:
    """Everything one action run sees."""

    idempotency_key: str
    scope: dict[str, Any]
    host: Host
    control: Control
    notifiers: Mapping[str, Notifier]
    http: httpx.AsyncClient
    now: Callable[[], float]
    instance_id: str | None = None
    updates: dict[str, Any] = field(default_factory=dict)
    """Variables an action sets (``set``); the runtime applies them after the action succeeds."""

    def render(self, value: Template | TemplateValue) -> Any:
        try:
            return value.render(self.scope)
        except EvaluationError as exc:
            raise ActionError("States.ExpressionFailed", str(exc), retryable=False) from None

    def mapping(self, value: TemplateValue) -> dict[str, Any]:
        """Render event data: a mapping stays one, anything else becomes ``{"value": ...}``."""
        data = self.render(value)
        return data if isinstance(data, dict) else {"value": data}

    def text(self, value: Template) -> str:
        rendered = self.render(value)
        return rendered if isinstance(rendered, str) else str(rendered)


class ActionKind(Protocol):
    """A registered action kind."""

    name: ClassVar[str]
    config: ClassVar[type[ActionConfig]]
    workflow_only: ClassVar[bool]

    async def run(self, config: Any, ctx: ActionContext) -> Any: ...


# --- built-in kinds -------------------------------------------------------------------------------------


class CommandConfig(ActionConfig):
    device: TemplateStr = Field(default_factory=lambda: Template("{{ device_id }}"))
    name: str = Field(min_length=1)
    params: TemplateData = Field(default_factory=lambda: TemplateValue({}))
    await_ack: bool = False
    timeout: Duration = 30.0


class CommandAction:
    name = "command"
    config = CommandConfig
    workflow_only = False

    async def run(self, config: CommandConfig, ctx: ActionContext) -> Any:
        params = ctx.render(config.params)
        if not isinstance(params, dict):
            raise ActionError("Command.Invalid", "params must render to a mapping", retryable=False)
        return await ctx.host.send_command(
            ctx.text(config.device),
            config.name,
            params,
            command_id=ctx.idempotency_key,
            await_ack=config.await_ack,
            ack_timeout=config.timeout,
        )


class PublishConfig(ActionConfig):
    topic: TemplateStr
    payload: TemplateData = Field(default_factory=lambda: TemplateValue(None))
    qos: Literal[0, 1] = 1
    retain: bool = False


class PublishAction:
    name = "publish"
    config = PublishConfig
    workflow_only = False

    async def run(self, config: PublishConfig, ctx: ActionContext) -> Any:
        topic = ctx.text(config.topic)
        await ctx.host.publish(topic, ctx.render(config.payload), qos=config.qos, retain=config.retain)
        return {"topic": topic}


class EmitConfig(ActionConfig):
    event: str = Field(min_length=1, description="event type")
    data: TemplateData = Field(default_factory=lambda: TemplateValue({}))
    device: TemplateStr | None = None


class EmitAction:
    name = "emit"
    config = EmitConfig
    workflow_only = False

    async def run(self, config: EmitConfig, ctx: ActionContext) -> Any:
        event = Event(
            type=config.event,
            data=ctx.mapping(config.data),
            device_id=ctx.text(config.device) if config.device is not None else None,
            ts=ctx.now(),
            source=ctx.instance_id or ctx.idempotency_key,
        )
        await ctx.host.emit(event)
        return event.as_dict()


class NotifyConfig(ActionConfig):
    channel: str = "log"
    message: TemplateStr
    severity: Literal["info", "warning", "critical"] = "info"
    data: TemplateData = Field(default_factory=lambda: TemplateValue({}))


class NotifyAction:
    name = "notify"
    config = NotifyConfig
    workflow_only = False

    async def run(self, config: NotifyConfig, ctx: ActionContext) -> Any:
        notifier = ctx.notifiers.get(config.channel)
        if notifier is None:
            raise ActionError("Notify.UnknownChannel", f"no notifier {config.channel!r}", retryable=False)
        message = ctx.text(config.message)
        data = ctx.render(config.data)
        await notifier.notify(message, severity=config.severity, data=data if isinstance(data, dict) else {})
        return {"channel": config.channel, "message": message}


class HttpConfig(ActionConfig):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: TemplateStr
    headers: TemplateData = Field(default_factory=lambda: TemplateValue({}))
    json_body: TemplateData | None = Field(None, alias="json")
    timeout: Duration = 10.0
    expect: list[int] = Field(default_factory=list, description="accepted status codes; default any 2xx")


class HttpAction:
    name = "http"
    config = HttpConfig
    workflow_only = False

    async def run(self, config: HttpConfig, ctx: ActionContext) -> Any:
        url = ctx.text(config.url)
        headers = {str(k): str(v) for k, v in (ctx.render(config.headers) or {}).items()}
        headers.setdefault("Idempotency-Key", ctx.idempotency_key)
        body = ctx.render(config.json_body) if config.json_body is not None else None
        try:
            response = await ctx.http.request(
                config.method, url, headers=headers, json=body, timeout=config.timeout
            )
        except httpx.TimeoutException:
            raise ActionError(
                "Http.Timeout", f"{config.method} {url}: no answer in {config.timeout}s"
            ) from None
        except httpx.HTTPError as exc:
            raise ActionError("Http.Connect", f"{config.method} {url}: {exc}") from None
        ok = response.status_code in config.expect if config.expect else 200 <= response.status_code < 300
        if not ok:
            raise ActionError(
                "Http.Status",
                f"{config.method} {url} answered {response.status_code}",
                retryable=response.status_code >= 500 or response.status_code == 429,
                details={"status": response.status_code, "body": response.text[:500]},
            )
        try:
            content: Any = response.json()
        except ValueError:
            content = response.text
        return {"status": response.status_code, "body": content}


class SetConfig(ActionConfig):
    values: TemplateData


class SetAction:
    name = "set"
    config = SetConfig
    workflow_only = True

    async def run(self, config: SetConfig, ctx: ActionContext) -> Any:
        values = ctx.render(config.values)
        if not isinstance(values, dict):
            raise ActionError("Set.Invalid", "values must render to a mapping", retryable=False)
        ctx.updates.update(values)
        return values


class LogConfig(ActionConfig):
    message: TemplateStr
    level: Literal["debug", "info", "warning", "error"] = "info"


class LogAction:
    name = "log"
    config = LogConfig
    workflow_only = False

    async def run(self, config: LogConfig, ctx: ActionContext) -> Any:
        message = ctx.text(config.message)
        log.log(logging.getLevelName(config.level.upper()), "%s", message, extra={"key": ctx.idempotency_key})
        return message


class StartWorkflowConfig(ActionConfig):
    workflow: str = Field(min_length=1)
    variables: TemplateData = Field(default_factory=lambda: TemplateValue({}))


class StartWorkflowAction:
    name = "start_workflow"
    config = StartWorkflowConfig
    workflow_only = False

    async def run(self, config: StartWorkflowConfig, ctx: ActionContext) -> Any:
        variables = ctx.render(config.variables)
        if not isinstance(variables, dict):
            raise ActionError("StartWorkflow.Invalid", "variables must render to a mapping", retryable=False)
        instance_id = await ctx.control.start_workflow(
            config.workflow, variables, parent=ctx.instance_id, request_id=ctx.idempotency_key
        )
        return {"instance_id": instance_id}


class SignalConfig(ActionConfig):
    instance: TemplateStr
    event: str = Field(min_length=1)
    data: TemplateData = Field(default_factory=lambda: TemplateValue({}))


class SignalAction:
    name = "signal"
    config = SignalConfig
    workflow_only = False

    async def run(self, config: SignalConfig, ctx: ActionContext) -> Any:
        target = ctx.text(config.instance)
        await ctx.control.signal(
            target,
            Event(type=config.event, data=ctx.mapping(config.data), ts=ctx.now()),
        )
        return {"instance_id": target}


BUILTIN: tuple[ActionKind, ...] = (
    CommandAction(),
    PublishAction(),
    EmitAction(),
    NotifyAction(),
    HttpAction(),
    SetAction(),
    LogAction(),
    StartWorkflowAction(),
    SignalAction(),
)


class ActionRegistry:
    """Action kinds by name; a host can add its own kinds."""

    def __init__(self, kinds: tuple[ActionKind, ...] = BUILTIN) -> None:
        self._kinds: dict[str, ActionKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: ActionKind) -> None:
        self._kinds[kind.name] = kind

    def get(self, name: str) -> ActionKind | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)


class LogNotifier:
    """Notifications as log records (the default ``log`` channel)."""

    async def notify(self, message: str, *, severity: str, data: Mapping[str, Any]) -> None:
        level = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}[severity]
        logging.getLogger("fieldline.notify").log(level, "%s", message, extra={"data": dict(data)})


class WebhookNotifier:
    """Notifications POSTed as JSON ``{"message", "severity", "data"}`` to a URL."""

    def __init__(self, url: str, client: httpx.AsyncClient, *, timeout: float = 10.0) -> None:
        self.url = url
        self.client = client
        self.timeout = timeout

    async def notify(self, message: str, *, severity: str, data: Mapping[str, Any]) -> None:
        try:
            response = await self.client.post(
                self.url,
                json={"message": message, "severity": severity, "data": dict(data)},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise ActionError("Notify.Webhook", f"{self.url}: {exc}") from None
        if response.status_code >= 300:
            raise ActionError(
                "Notify.Webhook",
                f"{self.url} answered {response.status_code}",
                retryable=response.status_code >= 500 or response.status_code == 429,
            )
