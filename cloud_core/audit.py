"""The audit log: who wrote what, when, and with which outcome.

``AuditMiddleware`` records every write request (POST, PUT, PATCH, DELETE under ``/api/``) as an ``AuditEntry``,
refused ones included (401, 403, 404, 409, 422 ...), so an admin sees attempts as well as changes. It holds the
response until its status and body are known, commits the entry, then sends the response: a client that saw a
write acknowledged can read it in the log at once. Reads pass straight through (one method check).

What an entry holds: the principal (``key:<id>``, ``jwt:<subject>``; ``anonymous`` when no credential was
accepted, with the key id a refused ``fl_`` key claimed), its role, method, path, the resource (the route's
literal segments after ``/api/v1``, e.g. ``devices`` or ``devices/commands``) and its id (the path parameters,
or the ``id`` a create returned), the status, and a small ``detail``: the names of the request body's top-level
fields (never their values, so no secret reaches the log), the problem type and detail of a refusal, the id of
a created sub-resource. Key changes made with the ``fieldline cloud`` command are recorded too
(``record_command``).

An entry that cannot be written (the database refuses) is logged and counted
(``fieldline_cloud_audit_write_failures``); the response still goes out, since the write itself has already
happened or been refused.

Entries older than ``audit.retention`` (default one year; 0 keeps them forever) are deleted every
``audit.prune_interval`` by the ``AuditLog``'s own task, in chunks, oldest first through the ``ts`` index
(``fieldline_cloud_audit_entries_pruned``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Select, delete, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_core.auth import Principal, split_key
from cloud_core.db import Database
from cloud_core.metrics import CloudMetrics
from cloud_core.models import AuditEntry
from cloud_core.models.base import utcnow
from cloud_core.schemas.timestamps import as_utc
from cloud_core.settings import AuditSettings
from fieldline.tasks import cancel_and_wait

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_INSPECTED = 64 * 1024
"""Request and response bodies larger than this are not inspected (and a larger response is not held)."""
MAX_FIELDS = 50

log = logging.getLogger("fieldline.cloud")


PRUNE_CHUNK = 5000
"""Entries deleted per transaction: a year of backlog never holds one long write lock."""


class AuditLog:
    """Async context manager: writes entries, prunes those past the retention in the background; counts what it
    wrote, what it could not and what it pruned."""

    def __init__(
        self, database: Database, metrics: CloudMetrics, settings: AuditSettings | None = None
    ) -> None:
        self.database = database
        self.settings = settings or AuditSettings()
        self.written = 0
        self.failures = 0
        self.pruned = 0
        self._pruner: asyncio.Task[None] | None = None
        metrics.register_source(
            "audit",
            lambda: {
                "entries_written": self.written,
                "write_failures": self.failures,
                "entries_pruned": self.pruned,
            },
        )

    async def __aenter__(self) -> AuditLog:
        if self.settings.retention > 0:
            self._pruner = asyncio.create_task(self._prune_forever(), name="audit-pruner")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(self._pruner)
        self._pruner = None

    async def prune(self, now: datetime | None = None) -> int:
        """Delete the entries older than the retention (at ``now``, default the current time); how many."""
        cutoff = (now or utcnow()) - timedelta(seconds=self.settings.retention)
        table = AuditEntry.__table__
        deleted = 0
        while True:
            async with self.database.session() as session:
                oldest = select(table.c.id).where(table.c.ts < cutoff).order_by(table.c.ts).limit(PRUNE_CHUNK)
                result = await session.execute(delete(table).where(table.c.id.in_(oldest)))
            deleted += result.rowcount
            if result.rowcount < PRUNE_CHUNK:
                break
        self.pruned += deleted
        return deleted

    async def _prune_forever(self) -> None:
        while True:
            try:
                if deleted := await self.prune():
                    log.info("audit entries past the retention deleted", extra={"deleted": deleted})
            except SQLAlchemyError:
                log.exception("audit entries could not be pruned; trying again later")
            await asyncio.sleep(self.settings.prune_interval)

    async def record(self, entry: AuditEntry) -> None:
        try:
            async with self.database.session() as session:
                session.add(entry)
        except SQLAlchemyError:
            self.failures += 1
            log.exception(
                "audit entry not written",
                extra={"principal": entry.principal, "method": entry.method, "path": entry.path},
            )
        else:
            self.written += 1


class AuditMiddleware:
    """ASGI middleware recording every write under ``/api/``; the ``AuditLog`` is the ``audit`` part of the
    app's services."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITE_METHODS
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        audit: AuditLog = scope["app"].state.services.parts["audit"]
        await _AuditedWrite(scope, receive, send, audit).run(self.app)


class _AuditedWrite:
    """One write request: watches the request body go in, holds the response until the entry is committed."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, audit: AuditLog) -> None:
        scope.setdefault("state", {})
        self.scope = scope
        self.receive = receive
        self.send = send
        self.audit = audit
        self.request_body = bytearray()
        self.held: list[Message] = []
        self.held_bytes = 0
        self.status: int | None = None
        self.passing_through = False
        self.recorded = False

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self._receive, self._send)
        except Exception:
            if not self.recorded:
                await self._record(500, None)
            raise
        if not self.recorded and self.status is not None:
            await self._record(self.status, None)

    async def _receive(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request" and len(self.request_body) <= MAX_INSPECTED:
            self.request_body += message.get("body", b"")
        return message

    async def _send(self, message: Message) -> None:
        if self.passing_through:
            await self.send(message)
            return
        self.held.append(message)
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        if message["type"] != "http.response.body":
            return
        self.held_bytes += len(message.get("body", b""))
        if not message.get("more_body", False):
            assert self.status is not None
            body = b"".join(m.get("body", b"") for m in self.held if m["type"] == "http.response.body")
            await self._record(self.status, body)
            await self._flush()
        elif self.held_bytes > MAX_INSPECTED:
            await self._flush()  # a stream: the entry is written once the app returns

    async def _flush(self) -> None:
        self.passing_through = True
        for message in self.held:
            await self.send(message)
        self.held.clear()

    async def _record(self, status: int, response_body: bytes | None) -> None:
        self.recorded = True
        scope = self.scope
        principal: Principal | None = scope["state"].get("principal")
        route = scope.get("route")
        template = getattr(route, "path", None)
        resource, resource_id = _resource(template, scope.get("path_params") or {})
        detail: dict[str, Any] = {}
        fields = _field_names(self.request_body)
        if fields is not None:
            detail["fields"] = fields
        answer = _json_object(response_body)
        if status >= 400:
            if answer is not None and "type" in answer:
                detail["problem"] = {"type": answer["type"], "detail": str(answer.get("detail", ""))[:300]}
            if status == 401:
                claimed = _claimed_key(scope)
                if claimed:
                    detail["claimed"] = claimed
        elif answer is not None and isinstance(answer.get("id"), str | int):
            created = str(answer["id"])[:200]
            if resource_id is None:
                resource_id = created
            elif created != resource_id:
                detail["created"] = created
        await self.audit.record(
            AuditEntry(
                principal=(principal.id if principal else "anonymous")[:200],
                role=principal.role.label if principal else None,
                method=scope["method"],
                path=scope["path"][:500],
                resource=resource[:64] if resource else None,
                resource_id=resource_id[:200] if resource_id else None,
                status_code=status,
                detail=detail,
            )
        )


def _resource(template: str | None, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """(``devices/commands``, ``dev-1``) for the template ``/api/v1/devices/{device_id}/commands``."""
    if template is None:
        return None, None
    segments = [s for s in template.split("/") if s]
    if segments[:1] == ["api"]:
        segments = segments[1:]
    if segments and segments[0][:1] == "v" and segments[0][1:].isdigit():
        segments = segments[1:]
    literals = [s for s in segments if not s.startswith("{")]
    names = [s.strip("{}").split(":")[0] for s in segments if s.startswith("{")]
    values = [str(params[n]) for n in names if n in params]
    return "/".join(literals) or None, "/".join(values) or None


def _field_names(body: bytes) -> list[str] | None:
    """The top-level field names of a JSON object body (never the values)."""
    data = _json_object(bytes(body))
    if data is None:
        return None
    return sorted(str(k)[:64] for k in data)[:MAX_FIELDS]


def _json_object(body: bytes | None) -> dict[str, Any] | None:
    if not body or len(body) > MAX_INSPECTED:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _claimed_key(scope: Scope) -> str | None:
    """``key:<id>`` of the API key a refused request presented (the id is public; the secret is never read)."""
    headers = dict(scope["headers"])
    token = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    parts = split_key(token)
    return f"key:{parts[0][:64]}" if parts else None


async def record_command(database: Database, command: str, key_id: str, status: int, **detail: Any) -> None:
    """Record a key change made by ``fieldline cloud <command>`` (principal ``cli``, method ``CLI``; the status
    is what the equivalent API call would have answered)."""
    async with database.session() as session:
        session.add(
            AuditEntry(
                principal="cli",
                method="CLI",
                path=f"fieldline cloud {command}",
                resource="keys",
                resource_id=key_id,
                status_code=status,
                detail=detail,
            )
        )


async def list_entries(
    session: AsyncSession,
    *,
    principal: str | None = None,
    resource: str | None = None,
    resource_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries matching every given filter, newest first; ``resource`` also matches its sub-resources
    (``devices`` finds ``devices/commands``)."""
    query: Select[tuple[AuditEntry]] = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if principal is not None:
        query = query.where(AuditEntry.principal == principal)
    if resource is not None:
        escaped = resource.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            or_(AuditEntry.resource == resource, AuditEntry.resource.like(f"{escaped}/%", escape="\\"))
        )
    if resource_id is not None:
        query = query.where(AuditEntry.resource_id == resource_id)
    if since is not None:
        query = query.where(AuditEntry.ts >= as_utc(since))
    if until is not None:
        query = query.where(AuditEntry.ts < as_utc(until))
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list((await session.execute(query)).scalars())
