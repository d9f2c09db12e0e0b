"""Where the engine keeps instances, their history, deployed definitions and small durable state.

``InstanceStore`` is the interface a host implements on its database (the agent uses ``SQLiteStore``, the cloud
its SQL database). ``save`` returns once the change is durable; implementations group concurrent saves into one
transaction (group commit). ``MemoryStore`` keeps everything in process, for tests and dry runs.

The key-value part (``put_state``/``get_states``) holds what is not an instance but must survive a restart:
rule timers (``for``, ``absence``), schedule next-fire times and start-request ids.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from workflows.instance import HistoryEntry, Instance, Status


@dataclass(frozen=True, slots=True)
class StoredDefinition:
    workflow_id: str
    version: str
    source: str
    deployed_at: float


class InstanceStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save(
        self,
        instances: Sequence[Instance],
        history: Sequence[HistoryEntry],
        states: Sequence[tuple[str, str, Any]] = (),
    ) -> None:
        """Persist these instances (upsert), append history and set key-value states atomically; durable on
        return. A state value of None deletes the key."""
        ...

    async def load_active(self) -> list[Instance]:
        """Every instance whose status is not terminal."""
        ...

    async def get(self, instance_id: str) -> Instance | None: ...

    async def list(
        self,
        *,
        workflow_id: str | None = None,
        status: Status | None = None,
        parent_id: str | None = None,
        limit: int = 100,
    ) -> list[Instance]:
        """Instances, newest first."""
        ...

    async def history(self, instance_id: str) -> list[HistoryEntry]:
        """An instance's history, oldest first."""
        ...

    async def put_definition(self, definition: StoredDefinition) -> None: ...

    async def definitions(self) -> list[StoredDefinition]: ...

    async def get_states(self, namespace: str) -> dict[str, Any]:
        """Every key-value state of a namespace (``rules``, ``schedules``, ``requests``)."""
        ...


class MemoryStore:
    """An in-process store (deep copies, so the engine cannot alias what it saved)."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.entries: dict[str, list[HistoryEntry]] = {}
        self.stored: dict[tuple[str, str], StoredDefinition] = {}
        self.states: dict[str, dict[str, Any]] = {}
        self.saves = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def save(
        self,
        instances: Sequence[Instance],
        history: Sequence[HistoryEntry],
        states: Sequence[tuple[str, str, Any]] = (),
    ) -> None:
        self.saves += 1
        for instance in instances:
            self.instances[instance.id] = copy.deepcopy(instance.to_record())
        for entry in history:
            self.entries.setdefault(entry.instance_id, []).append(entry)
        for namespace, key, value in states:
            bucket = self.states.setdefault(namespace, {})
            if value is None:
                bucket.pop(key, None)
            else:
                bucket[key] = copy.deepcopy(value)

    async def load_active(self) -> list[Instance]:
        return [
            Instance.from_record(copy.deepcopy(r))
            for r in self.instances.values()
            if not Status(r["status"]).terminal
        ]

    async def get(self, instance_id: str) -> Instance | None:
        record = self.instances.get(instance_id)
        return Instance.from_record(copy.deepcopy(record)) if record else None

    async def list(
        self,
        *,
        workflow_id: str | None = None,
        status: Status | None = None,
        parent_id: str | None = None,
        limit: int = 100,
    ) -> list[Instance]:
        out = [
            Instance.from_record(copy.deepcopy(r))
            for r in self.instances.values()
            if (workflow_id is None or r["workflow_id"] == workflow_id)
            and (status is None or r["status"] == status.value)
            and (parent_id is None or r["parent_id"] == parent_id)
        ]
        out.sort(key=lambda i: (i.created_at, i.id), reverse=True)
        return out[:limit]

    async def history(self, instance_id: str) -> list[HistoryEntry]:
        return list(self.entries.get(instance_id, []))

    async def put_definition(self, definition: StoredDefinition) -> None:
        self.stored[(definition.workflow_id, definition.version)] = definition

    async def definitions(self) -> list[StoredDefinition]:
        return sorted(self.stored.values(), key=lambda d: d.deployed_at)

    async def get_states(self, namespace: str) -> dict[str, Any]:
        return copy.deepcopy(self.states.get(namespace, {}))
