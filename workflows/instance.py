"""A running workflow instance and the history it leaves: plain data, saved after every transition."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal

WaitKind = Literal["timer", "event", "retry", "join"]


class Status(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TERMINATED})


@dataclass(slots=True)
class Wait:
    """What a waiting instance waits for. ``deadline`` (epoch seconds) is fixed when the wait begins, so a
    restart resumes it with the original deadline."""

    kind: WaitKind
    deadline: float | None = None
    event_type: str | None = None
    on_timeout: str | None = None
    token: int = 0
    device_id: str | None = None
    """For an event wait whose condition names the device (``e.device_id == device_id``): that device."""


@dataclass(slots=True)
class Join:
    """A parent's bookkeeping while its ``parallel`` branches or ``map`` iterations run as child instances."""

    total: int
    running: list[str] = field(default_factory=list)
    results: dict[int, Any] = field(default_factory=dict)
    next_item: int = 0
    items: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class Instance:
    id: str
    workflow_id: str
    version: str
    status: Status
    state: str
    created_at: float
    updated_at: float
    machine: tuple[str | int, ...] = ()
    """Path of the machine this instance runs: () for the workflow, a branch or map iterator for children."""
    vars: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    event: dict[str, Any] | None = None
    device: dict[str, Any] | None = None
    attempt: int = 0
    state_entered_at: float = 0.0
    state_deadline: float | None = None
    deadline: float | None = None
    transitions: int = 0
    since_wait: int = 0
    """Transitions since the instance last waited (the runaway-loop budget)."""
    wait: Wait | None = None
    join: Join | None = None
    inbox: list[dict[str, Any]] = field(default_factory=list)
    """Signals that arrived before the instance waited for them, oldest first (bounded)."""
    parent_id: str | None = None
    branch: int | None = None
    error: dict[str, Any] | None = None
    output: Any = None

    @property
    def attempt_token(self) -> int:
        """Names the current attempt of the current state: a timer armed for an earlier one is stale."""
        return self.transitions * 10_000 + self.attempt

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict (the store's format). Shallow: the store encodes it before the instance changes."""
        record = {name: getattr(self, name) for name in _FIELDS}
        record["status"] = self.status.value
        record["machine"] = list(self.machine)
        if self.wait is not None:
            wait = self.wait
            record["wait"] = {
                "kind": wait.kind,
                "deadline": wait.deadline,
                "event_type": wait.event_type,
                "on_timeout": wait.on_timeout,
                "token": wait.token,
                "device_id": wait.device_id,
            }
        if self.join is not None:
            join = self.join
            record["join"] = {
                "total": join.total,
                "running": list(join.running),
                "results": [[k, v] for k, v in join.results.items()],
                "next_item": join.next_item,
                "items": join.items,
            }
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Instance:
        data = dict(record)
        data["status"] = Status(data["status"])
        data["machine"] = tuple(data.get("machine") or ())
        if data.get("wait") is not None:
            data["wait"] = Wait(**data["wait"])
        if data.get("join") is not None:
            join = dict(data["join"])
            join["results"] = {int(k): v for k, v in join.get("results", [])}
            data["join"] = Join(**join)
        return cls(**data)


_FIELDS = tuple(f.name for f in fields(Instance))


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One step of an instance's trace: what happened, in which state, when, with details."""

    instance_id: str
    ts: float
    kind: str
    state: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)
