"""The registry's data access: devices, device types and gateways.

Every function takes the caller's ``AsyncSession`` (the caller owns the transaction). Writes also take the
``EventBus``: their events (``device.registered``, ``device.updated``, ``device.deleted``, ``gateway.online``,
``gateway.offline``) wait on the session and are published when its transaction commits, never for a change
that was rolled back. An event's ``data`` is the public representation of the device or gateway after the
change (before it, for ``device.deleted``); ``device.updated`` adds ``changed``, the names of changed fields.

``version`` (the ETag) counts changes to what operators register. What the cloud observes (a gateway's status,
agent and configuration versions, ``last_seen``) is written without bumping it, so a heartbeat never makes an
operator's If-Match stale.

Errors are problem details, so the routes let them through unchanged::

    RegistryError (Problem)
    ├── NotFound             404  no such device, device type or gateway
    ├── AlreadyExists        409  a create names an existing id
    ├── InUse                409  deleting a device type or gateway that devices use, without force
    ├── VersionMismatch      412  If-Match names another version (or the row changed during the write)
    ├── UnknownReference     422  a device names an unregistered device type or gateway
    └── InvalidQuery         400  a malformed label selector, sort or cursor
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Row, Select, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from cloud_core.after_commit import queue_event
from cloud_core.bus import (
    DEVICE_DELETED,
    DEVICE_REGISTERED,
    DEVICE_UPDATED,
    GATEWAY_OFFLINE,
    GATEWAY_ONLINE,
    EventBus,
)
from cloud_core.labels import SelectorError, parse_selector
from cloud_core.models import Device, DeviceType, Gateway
from cloud_core.pagination import Keyset, PaginationError
from cloud_core.problems import Problem
from cloud_core.schemas.device_types import DeviceTypeCreate, DeviceTypeUpdate
from cloud_core.schemas.devices import DeviceCreate, DevicePublic, DeviceUpdate
from cloud_core.schemas.gateways import GatewayCreate, GatewayPublic, GatewayUpdate
from cloud_core.upsert import insert_ignore

Kind = Literal["device", "device type", "gateway"]
Precondition = Collection[int] | None
"""Versions an If-Match accepts; None when the write is unconditional."""
Entity = TypeVar("Entity", Device, DeviceType, Gateway)

DEVICE_SORTS = Keyset(
    {
        "id": Device.id,
        "name": Device.name,
        "created_at": Device.created_at,
        "updated_at": Device.updated_at,
        "last_seen": Device.last_seen,
    },
    Device.id,
)
GATEWAY_SORTS = Keyset(
    {
        "id": Gateway.id,
        "name": Gateway.name,
        "created_at": Gateway.created_at,
        "updated_at": Gateway.updated_at,
        "last_seen": Gateway.last_seen,
    },
    Gateway.id,
)
DEVICE_TYPE_SORTS = Keyset(
    {
        "id": DeviceType.id,
        "name": DeviceType.name,
        "created_at": DeviceType.created_at,
        "updated_at": DeviceType.updated_at,
    },
    DeviceType.id,
)
_DEVICE_COLUMNS = {"type": "type_id", "gateway": "gateway_id"}
"""Public field name -> column attribute where they differ."""
_PUBLIC_NAMES = {column: field for field, column in _DEVICE_COLUMNS.items()}


class RegistryError(Problem):
    """Base of the registry's errors."""


class NotFound(RegistryError):
    """Raised when the device, device type or gateway does not exist."""

    def __init__(self, kind: Kind, key: str) -> None:
        self.kind, self.key = kind, key
        super().__init__(404, f"{kind.capitalize()} not found", f"no {kind} {key!r}", type="not-found")


class AlreadyExists(RegistryError):
    """Raised when a create names an id that is registered already."""

    def __init__(self, kind: Kind, key: str) -> None:
        self.kind, self.key = kind, key
        super().__init__(
            409, f"{kind.capitalize()} exists", f"{kind} {key!r} is registered already", type="exists"
        )


class InUse(RegistryError):
    """Raised when deleting a device type or gateway that devices still reference (without force)."""

    def __init__(self, kind: Kind, key: str, devices: int) -> None:
        self.kind, self.key, self.devices = kind, key, devices
        super().__init__(
            409,
            f"{kind.capitalize()} in use",
            f"{devices} device(s) use {kind} {key!r}; delete with ?force=true to detach them",
            type="in-use",
            devices=devices,
        )


class VersionMismatch(RegistryError):
    """Raised when If-Match does not name the current version, or the row changed while it was written."""

    def __init__(self, kind: Kind, key: str, current: int | None) -> None:
        self.kind, self.key, self.current = kind, key, current
        if current is None:
            detail = f"{kind} {key!r} changed while this request was applied; GET it again and retry"
            super().__init__(412, "Precondition failed", detail, type="version-mismatch")
            return
        tag = etag(current)
        super().__init__(
            412,
            "Precondition failed",
            f"{kind} {key!r} is now at ETag {tag}: GET it, reapply your change and send that ETag",
            type="version-mismatch",
            headers={"ETag": tag},
            current_etag=tag,
        )


class UnknownReference(RegistryError):
    """Raised when a device names a device type or gateway that is not registered."""

    def __init__(self, kind: Kind, key: str, field: str) -> None:
        self.kind, self.key = kind, key
        detail = f"no {kind} {key!r}: register it first"
        error = {"loc": ["body", field], "msg": detail, "type": "unknown_reference"}
        super().__init__(422, "Unknown reference", detail, type="unknown-reference", errors=[error])


class InvalidQuery(RegistryError):
    """Raised for a malformed label selector, sort or cursor."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(400, "Invalid query", detail, type="invalid-query", **extra)


def etag(version: int) -> str:
    """The weak entity tag of a version: weak because observed fields (``last_seen``, a gateway's status)
    change without a new version."""
    return f'W/"{version}"'


def utcnow() -> datetime:
    return datetime.now(UTC)


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396: ``patch`` merged into a copy of ``target``; a null removes a member, objects merge deeply."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            current = merged.get(key)
            merged[key] = merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


# events -------------------------------------------------------------------------------------------------


def queue_device_event(
    session: AsyncSession, bus: EventBus, type: str, device: Device | Row[Any], **extra: Any
) -> None:
    """Queue a device event whose data is the device's public representation (after a flush) plus ``extra``."""
    data = DevicePublic.of(device).model_dump(mode="json") | extra
    queue_event(session, bus, type, data, device_id=device.id)


# shared steps --------------------------------------------------------------------------------------------


async def _get(
    session: AsyncSession, model: type[Entity], kind: Kind, key: str, *, lock: bool = False
) -> Entity:
    row = await session.get(model, key, with_for_update=lock or None)
    if row is None:
        raise NotFound(kind, key)
    return row


def _check_version(kind: Kind, key: str, version: int, if_match: Precondition) -> None:
    if if_match is not None and version not in if_match:
        raise VersionMismatch(kind, key, version)


async def _flush(session: AsyncSession, kind: Kind, key: str) -> None:
    try:
        await session.flush()
    except StaleDataError:
        raise VersionMismatch(kind, key, None) from None


async def _insert(session: AsyncSession, row: Device | DeviceType | Gateway, kind: Kind) -> None:
    if await session.get(type(row), row.id) is not None:
        raise AlreadyExists(kind, row.id)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise AlreadyExists(kind, row.id) from None


def _assign(row: Any, values: Mapping[str, Any]) -> list[str]:
    """Set the attributes that differ; the names of those changed."""
    changed = []
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed.append(name)
    return changed


def _text_search(q: str | None, *columns: Any) -> Any:
    if not q:
        return None
    needle = q.lower()
    return or_(*(func.lower(c).contains(needle, autoescape=True) for c in columns))


def _selector_condition(selector: str | None, column: Any) -> Any:
    if not selector:
        return None
    try:
        return parse_selector(selector).condition(column)
    except SelectorError as exc:
        raise InvalidQuery(f"label selector: {exc}", position=exc.position) from None


async def _page(
    session: AsyncSession, query: Select[Any], keyset: Keyset, sort: str, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    try:
        order = keyset.sort(sort)
        query = keyset.apply(query, order, limit, cursor)
    except PaginationError as exc:
        raise InvalidQuery(str(exc)) from None
    rows = list((await session.execute(query)).scalars())
    return keyset.page(rows, order, limit)


def _where(query: Select[Any], *conditions: Any) -> Select[Any]:
    kept = [c for c in conditions if c is not None]
    return query.where(*kept) if kept else query


# devices -------------------------------------------------------------------------------------------------


async def get_device(session: AsyncSession, device_id: str) -> Device:
    return await _get(session, Device, "device", device_id)


def _device_conditions(
    *,
    selector: str | None = None,
    gateway: str | None = None,
    type: str | None = None,
    status: str | None = None,
    q: str | None = None,
) -> list[Any]:
    return [
        _selector_condition(selector, Device.labels),
        Device.gateway_id == gateway if gateway is not None else None,
        Device.type_id == type if type is not None else None,
        Device.status == status if status is not None else None,
        _text_search(q, Device.id, Device.name),
    ]


async def list_devices(
    session: AsyncSession,
    *,
    selector: str | None = None,
    status: str | None = None,
    gateway: str | None = None,
    type: str | None = None,
    q: str | None = None,
    sort: str = "id",
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[Device], str | None]:
    """One page of devices matching every filter given, and the cursor of the next page."""
    conditions = _device_conditions(selector=selector, gateway=gateway, type=type, status=status, q=q)
    return await _page(session, _where(select(Device), *conditions), DEVICE_SORTS, sort, limit, cursor)


async def device_ids(
    session: AsyncSession,
    *,
    selector: str | None = None,
    gateway: str | None = None,
    type: str | None = None,
    ids: list[str] | None = None,
) -> list[str]:
    """Ids of the registered devices matching every filter given (all of them when none is), sorted. ``ids``
    restricts the answer to those ids (unregistered ones are left out). Raises ``InvalidQuery`` for a bad
    selector."""
    conditions = _device_conditions(selector=selector, gateway=gateway, type=type)
    if ids is not None:
        conditions.append(Device.id.in_(ids))
    query = _where(select(Device.id), *conditions).order_by(Device.id)
    return list((await session.execute(query)).scalars())


async def _check_references(session: AsyncSession, *, type: str | None, gateway: str | None) -> None:
    if type is not None and await session.get(DeviceType, type) is None:
        raise UnknownReference("device type", type, "type")
    if gateway is not None and await session.get(Gateway, gateway) is None:
        raise UnknownReference("gateway", gateway, "gateway")


def new_device(data: DeviceCreate) -> Device:
    now = utcnow()
    return Device(
        id=data.id,
        created_at=now,
        updated_at=now,
        name=data.name,
        type_id=data.type,
        gateway_id=data.gateway,
        manufacturer=data.manufacturer,
        model=data.model,
        firmware_version=data.firmware_version,
        capabilities=list(data.capabilities),
        labels=dict(data.labels),
        status=data.status,
    )


def device_changes(device: Device, patch: Mapping[str, Any]) -> dict[str, Any]:
    """Column values a merge patch (public field names, nulls included) sets on ``device``."""
    values: dict[str, Any] = {}
    for field, value in patch.items():
        if field == "labels":
            values["labels"] = merge_patch(device.labels, value) if value is not None else {}
        elif field == "capabilities":
            values["capabilities"] = list(value or [])
        elif field == "name":
            values["name"] = value or ""
        else:
            values[_DEVICE_COLUMNS.get(field, field)] = value
    return values


def assign_device(device: Device, values: Mapping[str, Any]) -> list[str]:
    """Set ``values`` (column names) on ``device``; the public names of the fields that changed."""
    return [_PUBLIC_NAMES.get(name, name) for name in _assign(device, values)]


async def create_device(session: AsyncSession, bus: EventBus, data: DeviceCreate) -> Device:
    await _check_references(session, type=data.type, gateway=data.gateway)
    device = new_device(data)
    await _insert(session, device, "device")
    queue_device_event(session, bus, DEVICE_REGISTERED, device)
    return device


async def update_device(
    session: AsyncSession, bus: EventBus, device_id: str, patch: DeviceUpdate, *, if_match: Precondition
) -> Device:
    """Apply a merge patch; a patch that changes nothing writes nothing (same version, no event)."""
    device = await _get(session, Device, "device", device_id, lock=True)
    _check_version("device", device_id, device.version, if_match)
    values = device_changes(device, patch.model_dump(exclude_unset=True))
    await _check_references(session, type=values.get("type_id"), gateway=values.get("gateway_id"))
    changed = assign_device(device, values)
    if changed:
        await _flush(session, "device", device_id)
        queue_device_event(session, bus, DEVICE_UPDATED, device, changed=changed)
    return device


async def delete_device(
    session: AsyncSession, bus: EventBus, device_id: str, *, if_match: Precondition = None
) -> None:
    device = await _get(session, Device, "device", device_id, lock=True)
    _check_version("device", device_id, device.version, if_match)
    data = DevicePublic.of(device).model_dump(mode="json")
    await session.delete(device)
    await _flush(session, "device", device_id)
    queue_event(session, bus, DEVICE_DELETED, data, device_id=device_id)


async def _detach_devices(
    session: AsyncSession, bus: EventBus, kind: Kind, key: str, column: Any, *, force: bool
) -> None:
    """Refuse (``InUse``) or, with ``force``, detach the devices that reference a device type or gateway."""
    count = await session.scalar(select(func.count()).select_from(Device).where(column == key)) or 0
    if not count:
        return
    if not force:
        raise InUse(kind, key, count)
    devices = list((await session.execute(select(Device).where(column == key))).scalars())
    for device in devices:
        setattr(device, column.key, None)
    await _flush(session, kind, key)
    for device in devices:
        queue_device_event(session, bus, DEVICE_UPDATED, device, changed=[_PUBLIC_NAMES[column.key]])


# device types --------------------------------------------------------------------------------------------


async def get_device_type(session: AsyncSession, type_id: str) -> DeviceType:
    return await _get(session, DeviceType, "device type", type_id)


async def list_device_types(
    session: AsyncSession,
    *,
    q: str | None = None,
    sort: str = "id",
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[DeviceType], str | None]:
    query = _where(select(DeviceType), _text_search(q, DeviceType.id, DeviceType.name))
    return await _page(session, query, DEVICE_TYPE_SORTS, sort, limit, cursor)


async def create_device_type(session: AsyncSession, data: DeviceTypeCreate) -> DeviceType:
    now = utcnow()
    row = DeviceType(
        id=data.id,
        created_at=now,
        updated_at=now,
        name=data.name,
        description=data.description,
        metrics={name: spec.model_dump() for name, spec in data.metrics.items()},
    )
    await _insert(session, row, "device type")
    return row


async def update_device_type(
    session: AsyncSession, type_id: str, patch: DeviceTypeUpdate, *, if_match: Precondition
) -> DeviceType:
    row = await _get(session, DeviceType, "device type", type_id, lock=True)
    _check_version("device type", type_id, row.version, if_match)
    fields = patch.model_dump(exclude_unset=True)
    values: dict[str, Any] = {}
    if "name" in fields:
        values["name"] = fields["name"] or ""
    if "description" in fields:
        values["description"] = fields["description"] or ""
    if "metrics" in fields:
        metrics = fields["metrics"]
        merged = merge_patch(row.metrics, metrics) if metrics is not None else {}
        values["metrics"] = {name: {"unit": "", "description": ""} | spec for name, spec in merged.items()}
    if _assign(row, values):
        await _flush(session, "device type", type_id)
    return row


async def delete_device_type(
    session: AsyncSession, bus: EventBus, type_id: str, *, force: bool = False, if_match: Precondition = None
) -> None:
    """Delete a device type; devices using it block the delete unless ``force`` (then their type is
    cleared and each gets ``device.updated``)."""
    row = await _get(session, DeviceType, "device type", type_id, lock=True)
    _check_version("device type", type_id, row.version, if_match)
    await _detach_devices(session, bus, "device type", type_id, Device.type_id, force=force)
    await session.delete(row)
    await _flush(session, "device type", type_id)


# gateways ------------------------------------------------------------------------------------------------


async def get_gateway(session: AsyncSession, gateway_id: str) -> Gateway:
    return await _get(session, Gateway, "gateway", gateway_id)


async def list_gateways(
    session: AsyncSession,
    *,
    selector: str | None = None,
    status: str | None = None,
    q: str | None = None,
    sort: str = "id",
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[Gateway], str | None]:
    query = _where(
        select(Gateway),
        _selector_condition(selector, Gateway.labels),
        Gateway.status == status if status is not None else None,
        _text_search(q, Gateway.id, Gateway.name),
    )
    return await _page(session, query, GATEWAY_SORTS, sort, limit, cursor)


async def create_gateway(session: AsyncSession, data: GatewayCreate) -> Gateway:
    now = utcnow()
    row = Gateway(id=data.id, name=data.name, labels=dict(data.labels), created_at=now, updated_at=now)
    await _insert(session, row, "gateway")
    return row


async def update_gateway(
    session: AsyncSession, gateway_id: str, patch: GatewayUpdate, *, if_match: Precondition
) -> Gateway:
    row = await _get(session, Gateway, "gateway", gateway_id, lock=True)
    _check_version("gateway", gateway_id, row.version, if_match)
    fields = patch.model_dump(exclude_unset=True)
    values: dict[str, Any] = {}
    if "name" in fields:
        values["name"] = fields["name"] or ""
    if "labels" in fields:
        labels = fields["labels"]
        values["labels"] = merge_patch(row.labels, labels) if labels is not None else {}
    if _assign(row, values):
        await _flush(session, "gateway", gateway_id)
    return row


async def delete_gateway(
    session: AsyncSession,
    bus: EventBus,
    gateway_id: str,
    *,
    force: bool = False,
    if_match: Precondition = None,
) -> None:
    """Delete a gateway; devices behind it block the delete unless ``force`` (then their gateway is cleared
    and each gets ``device.updated``)."""
    row = await _get(session, Gateway, "gateway", gateway_id, lock=True)
    _check_version("gateway", gateway_id, row.version, if_match)
    await _detach_devices(session, bus, "gateway", gateway_id, Device.gateway_id, force=force)
    await session.delete(row)
    await _flush(session, "gateway", gateway_id)


async def set_gateway_status(
    session: AsyncSession,
    bus: EventBus,
    gateway_id: str,
    status: str,
    *,
    agent_version: str | None = None,
    config_version: str | None = None,
    seen_at: datetime | None = None,
    keep_last_seen: bool = False,
) -> bool:
    """Record what a gateway reported (``online``/``offline``, from its retained status or last will),
    registering an unknown gateway. ``gateway.online``/``gateway.offline`` is queued when the status changed;
    returns whether it did. Versions given as None keep their stored value; ``last_seen`` becomes ``seen_at``
    (default: now), or stays as it is with ``keep_last_seen``. Safe against concurrent reports: the change is a conditional UPDATE, so only one writer
    sees it."""
    if status not in ("online", "offline"):
        raise ValueError(f"gateway status must be online or offline, not {status!r}")
    table = Gateway.__table__
    observed: dict[str, Any] = {} if keep_last_seen else {"last_seen": seen_at or utcnow()}
    if agent_version is not None:
        observed["agent_version"] = agent_version
    if config_version is not None:
        observed["config_version"] = config_version
    await session.execute(insert_ignore(session, Gateway, [{"id": gateway_id}]))
    changed = (
        await session.execute(
            update(table)
            .where(table.c.id == gateway_id, table.c.status != status)
            .values(status=status, **observed)
            .returning(*table.c)
        )
    ).first()
    if changed is None:
        if observed:
            await session.execute(update(table).where(table.c.id == gateway_id).values(**observed))
        return False
    data = GatewayPublic.of(changed).model_dump(mode="json")  # type: ignore[arg-type]
    queue_event(session, bus, GATEWAY_ONLINE if status == "online" else GATEWAY_OFFLINE, data)
    return True
