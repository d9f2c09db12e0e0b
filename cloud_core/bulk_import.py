"""Bulk import of devices from CSV or JSON, with a report line for every row.

Formats:

- **CSV** (``text/csv``, UTF-8, an optional BOM): a header row, then one device per row. Columns: ``id``
  (required) and any of ``name``, ``type``, ``gateway``, ``manufacturer``, ``model``, ``firmware_version``,
  ``status``, ``capabilities`` (separated by ``;``) and ``labels.<key>`` (one column per label). An empty cell
  means "not given". Rows are numbered by line, so the report matches what a spreadsheet shows.
- **JSON** (``application/json``): an array of objects shaped like the create body of ``POST /api/v1/devices``;
  rows are numbered from 1.

Modes: ``create`` refuses ids that exist; ``upsert`` applies an existing id's row as a merge patch (the fields
the row gives replace the stored ones, labels are merged). Every row is validated alone, so one bad row never
blocks the others. Valid rows are written in transactions of ``CHUNK`` rows; if one fails (a device registered
concurrently), its rows are retried one by one, and only the rows that still fail are reported as errors.
Events (``device.registered``, ``device.updated``) go out after each transaction commits.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from fastapi import Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from cloud_core import registry
from cloud_core.bus import DEVICE_REGISTERED, DEVICE_UPDATED, EventBus
from cloud_core.db import Database
from cloud_core.labels import KEY_PATTERN
from cloud_core.models import Device, DeviceType, Gateway
from cloud_core.problems import Problem
from cloud_core.schemas.devices import DeviceCreate, ImportReport, ImportRow

Mode = Literal["create", "upsert"]
CHUNK = 500
MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100_000
COLUMNS = (
    "id",
    "name",
    "type",
    "gateway",
    "manufacturer",
    "model",
    "firmware_version",
    "status",
    "capabilities",
)
LABEL_PREFIX = "labels."
_LABEL_KEY = re.compile(KEY_PATTERN)
REQUEST_BODY = {
    "required": True,
    "content": {
        "text/csv": {"schema": {"type": "string", "description": "a header row, then one device per row"}},
        "application/json": {
            "schema": {
                "type": "array",
                "items": {"type": "object", "description": "a device as in POST /api/v1/devices"},
            }
        },
    },
}


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One input row: its number, its fields, or why it could not be read (``data`` may still hold its id)."""

    row: int
    data: dict[str, Any] | None
    error: str | None = None


def _bad_file(detail: str) -> Problem:
    return Problem(400, "Unreadable import", detail, type="bad-import")


async def read_body(request: Request) -> bytes:
    """The request body; 413 beyond ``MAX_BYTES`` (checked while reading, not only from Content-Length)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            raise Problem(
                413, "Payload too large", f"an import has at most {MAX_BYTES} bytes", type="too-large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse(content_type: str, body: bytes) -> list[ParsedRow]:
    """Rows of a CSV or JSON import; 415 for another media type, 400 when the file as a whole is unreadable."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "text/csv":
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _bad_file(f"the CSV is not UTF-8 (byte {exc.start})") from None
        rows = parse_csv(text)
    elif media_type == "application/json":
        rows = parse_json(body)
    else:
        raise Problem(
            415,
            "Unsupported media type",
            f"send text/csv or application/json, not {media_type or 'no Content-Type'}",
            type="unsupported-media-type",
        )
    if len(rows) > MAX_ROWS:
        raise Problem(413, "Payload too large", f"an import has at most {MAX_ROWS} rows", type="too-large")
    return rows


def _csv_columns(header: list[str]) -> list[str]:
    columns = [name.strip() for name in header]
    for name in columns:
        if name.startswith(LABEL_PREFIX):
            key = name[len(LABEL_PREFIX) :]
            if not _LABEL_KEY.match(key):
                raise _bad_file(f"column {name!r}: {key!r} is not a valid label key")
        elif name not in COLUMNS:
            known = ", ".join(COLUMNS)
            raise _bad_file(f"unknown column {name!r} (known: {known}, and labels.<key>)")
    if "id" not in columns:
        raise _bad_file("the header has no id column")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise _bad_file(f"duplicate column(s): {', '.join(duplicates)}")
    return columns


def parse_csv(text: str) -> list[ParsedRow]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise _bad_file(f"line 1: {exc}") from None
    if header is None:
        return []
    columns = _csv_columns(header)
    rows: list[ParsedRow] = []
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader, None)
        except csv.Error as exc:
            rows.append(ParsedRow(line, None, f"unreadable CSV: {exc}"))
            break
        if record is None:
            return rows
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(columns):
            index = columns.index("id")
            known = {"id": record[index].strip()} if index < len(record) else None
            rows.append(ParsedRow(line, known, f"expected {len(columns)} fields, found {len(record)}"))
            continue
        rows.append(ParsedRow(line, _csv_device(columns, record)))
    return rows


def _csv_device(columns: list[str], record: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for name, raw in zip(columns, record, strict=True):
        cell = raw.strip()
        if not cell:
            continue
        if name.startswith(LABEL_PREFIX):
            labels[name[len(LABEL_PREFIX) :]] = cell
        elif name == "capabilities":
            data[name] = [c.strip() for c in cell.split(";") if c.strip()]
        else:
            data[name] = cell
    if labels:
        data["labels"] = labels
    return data


def parse_json(body: bytes) -> list[ParsedRow]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad_file(f"invalid JSON: {exc}") from None
    if not isinstance(items, list):
        raise _bad_file("expected a JSON array of devices")
    return [
        ParsedRow(n, item) if isinstance(item, dict) else ParsedRow(n, None, "expected an object")
        for n, item in enumerate(items, 1)
    ]


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


@dataclass(slots=True)
class _Valid:
    row: int
    data: DeviceCreate


def _validate(rows: Sequence[ParsedRow]) -> tuple[list[_Valid], list[ImportRow]]:
    valid: list[_Valid] = []
    errors: list[ImportRow] = []
    first_row: dict[str, int] = {}
    for parsed in rows:
        raw_id = parsed.data.get("id") if parsed.data is not None else None
        row_id = raw_id if isinstance(raw_id, str) else None
        if parsed.error is not None or parsed.data is None:
            errors.append(ImportRow(row=parsed.row, id=row_id, status="error", error=parsed.error))
            continue
        try:
            data = DeviceCreate.model_validate(parsed.data)
        except ValidationError as exc:
            errors.append(
                ImportRow(row=parsed.row, id=row_id, status="error", error=_validation_message(exc))
            )
            continue
        if data.id in first_row:
            error = f"device {data.id!r} is also on row {first_row[data.id]}"
            errors.append(ImportRow(row=parsed.row, id=data.id, status="error", error=error))
            continue
        first_row[data.id] = parsed.row
        valid.append(_Valid(parsed.row, data))
    return valid, errors


def _chunks(items: Sequence[_Valid], size: int) -> Iterator[Sequence[_Valid]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _existing_ids(session: AsyncSession, model: Any, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    return set((await session.execute(select(model.id).where(model.id.in_(ids)))).scalars())


async def _write(
    session: AsyncSession, bus: EventBus, items: Sequence[_Valid], mode: Mode
) -> list[ImportRow]:
    """Create or update the devices of ``items`` in the caller's transaction; rows that cannot be written
    (an unknown reference, an existing id in create mode) come back as errors."""
    ids = [item.data.id for item in items]
    existing = {d.id: d for d in (await session.execute(select(Device).where(Device.id.in_(ids)))).scalars()}
    types = await _existing_ids(session, DeviceType, {i.data.type for i in items if i.data.type})
    gateways = await _existing_ids(session, Gateway, {i.data.gateway for i in items if i.data.gateway})
    results: list[ImportRow] = []
    created: list[Device] = []
    updated: list[tuple[Device, list[str]]] = []
    for item in items:
        data = item.data
        error = None
        if data.type is not None and data.type not in types:
            error = registry.UnknownReference("device type", data.type, "type").detail
        elif data.gateway is not None and data.gateway not in gateways:
            error = registry.UnknownReference("gateway", data.gateway, "gateway").detail
        elif data.id in existing and mode == "create":
            error = f"device {data.id!r} is registered already (mode=upsert updates it)"
        if error is not None:
            results.append(ImportRow(row=item.row, id=data.id, status="error", error=error))
            continue
        device = existing.get(data.id)
        if device is None:
            device = registry.new_device(data)
            session.add(device)
            created.append(device)
            results.append(ImportRow(row=item.row, id=data.id, status="created"))
        else:
            given = data.model_dump(include=data.model_fields_set - {"id"})
            changed = registry.assign_device(device, registry.device_changes(device, given))
            updated.append((device, changed))
            results.append(ImportRow(row=item.row, id=data.id, status="updated", changed=changed))
    await session.flush()
    for device in created:
        registry.queue_device_event(session, bus, DEVICE_REGISTERED, device)
    for device, changed in updated:
        if changed:
            registry.queue_device_event(session, bus, DEVICE_UPDATED, device, changed=changed)
    return results


async def import_devices(
    database: Database, bus: EventBus, rows: Sequence[ParsedRow], *, mode: Mode = "create"
) -> ImportReport:
    """Validate and write ``rows``; the report has one entry per row, in input order."""
    valid, results = _validate(rows)
    for chunk in _chunks(valid, CHUNK):
        try:
            async with database.session() as session:
                results.extend(await _write(session, bus, chunk, mode))
        except (IntegrityError, StaleDataError):
            for item in chunk:  # someone else wrote one of these ids meanwhile: row by row
                try:
                    async with database.session() as session:
                        results.extend(await _write(session, bus, [item], mode))
                except (IntegrityError, StaleDataError):
                    error = f"device {item.data.id!r} changed concurrently; import the row again"
                    results.append(ImportRow(row=item.row, id=item.data.id, status="error", error=error))
    results.sort(key=lambda r: r.row)
    counts = {status: sum(r.status == status for r in results) for status in ("created", "updated", "error")}
    return ImportReport(
        mode=mode,
        total=len(results),
        created=counts["created"],
        updated=counts["updated"],
        failed=counts["error"],
        rows=results,
    )
