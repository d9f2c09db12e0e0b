"""Replay recorded telemetry to a broker, with its original timing (scaled by ``speed``) or as fast as possible.

Input formats (chosen by the file's suffix; docs/simulator.md has examples):

- CSV, long: a header ``ts,device_id,metric,value``, one metric per row; consecutive rows with the same ``ts``
  and ``device_id`` make one message.
- CSV, wide: a header ``ts,device_id,<metric>,<metric>...``, one message per row; an empty cell leaves that
  metric out.
- JSONL (``.jsonl``/``.ndjson``): one ``{"ts": …, "device_id": "…", "metrics": {name: value}}`` per line.

``ts`` is epoch seconds or an ISO 8601 time (UTC when it has no offset). CSV cells read as numbers, ``true``/
``false``, ``null`` (long format) or else as strings. Each message goes to ``devices/{device_id}/telemetry`` as
JSON ``{"ts", "metrics"}``; by default every timestamp is moved by the same offset so the first row carries the
replay's start time (spacing kept); ``original_timestamps`` keeps them as recorded.

A bad row (unparsable time, invalid device id or metric name, wrong column count, a value of the wrong type) is
reported as ``file:line: message``, skipped and counted; the good rows around it are still sent. A row earlier
than the one before it is sent at once (and counted as ``out_of_order``). Everything goes over one MQTT
connection.
"""

from __future__ import annotations

import asyncio
import csv
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from device_sim.errors import ReplayError, TransportError
from device_sim.mqtt_client import MqttClient
from device_sim.mqtt_transport import Broker
from fieldline.payloads import MAX_STRING_LENGTH, NAME_PATTERN
from fieldline.wire import Topics, valid_id

LONG_HEADER = ["ts", "device_id", "metric", "value"]
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(slots=True)
class Row:
    line: int
    ts: float
    device_id: str
    metrics: dict[str, Any]


@dataclass(slots=True)
class BadRow:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class _RowError(ValueError):
    pass


def _time(value: Any) -> float:
    if isinstance(value, bool):
        raise _RowError(f"ts {value!r} is not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _RowError(f"ts {value!r} is not a time")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _RowError(f"ts {value!r} is neither epoch seconds nor an ISO 8601 time") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    raise _RowError(f"ts {value!r} is not a time")


def _device(value: Any) -> str:
    if not isinstance(value, str) or not valid_id(value):
        raise _RowError(f"device_id {value!r} is not a valid device id")
    return value


def _metric_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise _RowError(f"metric name {value!r} is not valid (letters, digits, _ . : -; at most 64)")
    return value


def _cell(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        if len(text) > MAX_STRING_LENGTH:
            raise _RowError(f"value of {len(text)} characters is over {MAX_STRING_LENGTH}") from None
        return text
    if not math.isfinite(number):
        raise _RowError(f"value {text!r} is not a finite number")
    return number


def _json_value(name: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
            raise _RowError(f"metrics.{name}: string of {len(value)} characters is over {MAX_STRING_LENGTH}")
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise _RowError(f"metrics.{name}: {type(value).__name__} is not a number, boolean, string or null")


def read_rows(path: Path) -> Iterator[Row | BadRow]:
    """The file's messages in file order, with a ``BadRow`` in place of each row that cannot be read."""
    name = str(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ReplayError(f"cannot open: {exc.strerror}", path=name) from exc
    with handle:
        if path.suffix.lower() in JSONL_SUFFIXES:
            yield from _jsonl(handle, name)
        else:
            yield from _csv(handle, name)


def _jsonl(handle: Any, name: str) -> Iterator[Row | BadRow]:
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            data = orjson.loads(text)
            if not isinstance(data, dict):
                raise _RowError("expected an object {ts, device_id, metrics}")
            unknown = sorted(set(data) - {"ts", "device_id", "metrics"})
            if unknown:
                raise _RowError(f"unknown field(s) {', '.join(unknown)}")
            metrics = data.get("metrics")
            if not isinstance(metrics, dict) or not metrics:
                raise _RowError("metrics must be a non-empty object")
            row = Row(
                number,
                _time(data.get("ts")),
                _device(data.get("device_id")),
                {_metric_name(k): _json_value(k, v) for k, v in metrics.items()},
            )
        except orjson.JSONDecodeError as exc:
            yield BadRow(name, number, f"not JSON: {exc}")
        except _RowError as exc:
            yield BadRow(name, number, str(exc))
        else:
            yield row


def _csv(handle: Any, name: str) -> Iterator[Row | BadRow]:
    reader = csv.reader(handle)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ReplayError("empty file", path=name) from None
    except csv.Error as exc:
        raise ReplayError(f"unreadable CSV header: {exc}", path=name) from None
    if header[:2] != ["ts", "device_id"] or len(header) < 3:
        raise ReplayError(
            "the header must be ts,device_id,metric,value (long) or ts,device_id,<metric>,... (wide)",
            path=name,
        )
    long = header == LONG_HEADER
    if not long:
        bad = [h for h in header[2:] if not NAME_PATTERN.fullmatch(h)]
        if bad:
            raise ReplayError(
                f"header column(s) {', '.join(map(repr, bad))} are not valid metric names", path=name
            )
    pending: Row | None = None
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield BadRow(name, reader.line_num, f"unreadable CSV: {exc}")
            continue
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        try:
            if len(cells) != len(header):
                raise _RowError(f"{len(cells)} columns where the header has {len(header)}")
            ts, device_id = _time(cells[0]), _device(cells[1].strip())
            if long:
                metric = _metric_name(cells[2].strip())
                if not cells[3].strip():
                    raise _RowError(f"{metric}: empty value")
                metrics = {metric: _cell(cells[3])}
            else:
                metrics = {h: _cell(c) for h, c in zip(header[2:], cells[2:], strict=True) if c.strip()}
                if not metrics:
                    raise _RowError("every metric cell is empty")
        except _RowError as exc:
            yield BadRow(name, line, str(exc))
            continue
        if long and pending is not None and pending.ts == ts and pending.device_id == device_id:
            pending.metrics.update(metrics)
            continue
        if pending is not None:
            yield pending
        pending = Row(line, ts, device_id, metrics)
        if not long:
            yield pending
            pending = None
    if pending is not None:
        yield pending


@dataclass
class ReplayStats:
    sent: int = 0
    acknowledged: int = 0
    bad_rows: int = 0
    out_of_order: int = 0
    devices: set[str] = field(default_factory=set)
    first_ts: float | None = None
    last_ts: float | None = None

    def as_dict(self, elapsed: float) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "bad_rows": self.bad_rows,
            "out_of_order": self.out_of_order,
            "devices": len(self.devices),
            "recorded_seconds": round((self.last_ts or 0.0) - (self.first_ts or 0.0), 3),
            "real_seconds": round(elapsed, 3),
        }


async def replay(
    path: Path,
    broker: Broker,
    *,
    speed: float | None = 1.0,
    original_timestamps: bool = False,
    qos: int = 1,
    on_bad_row: Callable[[BadRow], None] | None = None,
) -> dict[str, Any]:
    """Send the file's rows; ``speed`` None sends as fast as the broker takes them. ``on_bad_row(BadRow)`` is
    called for each bad row. Returns the summary."""
    stats = ReplayStats()
    rows = read_rows(path)  # opens the file now: a missing file fails before connecting
    client = MqttClient(broker.host, broker.port, f"fl-sim-replay-{os.getpid()}", tls=broker.tls)
    await client.connect()
    started_real = time.monotonic()
    wall_start = time.time()
    previous = -math.inf
    try:
        for item in rows:
            if isinstance(item, BadRow):
                stats.bad_rows += 1
                if on_bad_row is not None:
                    on_bad_row(item)
                continue
            if stats.first_ts is None:
                stats.first_ts = item.ts
            if item.ts < previous:
                stats.out_of_order += 1
            elif speed is not None:
                delay = (item.ts - stats.first_ts) / speed - (time.monotonic() - started_real)
                if delay > 0:
                    await asyncio.sleep(delay)
            previous = max(previous, item.ts)
            stats.last_ts = previous
            ts = item.ts if original_timestamps else round(item.ts - stats.first_ts + wall_start, 3)
            payload = orjson.dumps({"ts": ts, "metrics": item.metrics})
            await client.wait_window()
            if not client.publish(Topics.device_telemetry(item.device_id), payload, qos):
                raise TransportError(f"{path}:{item.line}: the connection to {broker} was lost")
            stats.sent += 1
            stats.devices.add(item.device_id)
        async with asyncio.timeout(30):
            await client.wait_acked()
    finally:
        stats.acknowledged = client.acked if qos else stats.sent
        await client.disconnect()
    return stats.as_dict(time.monotonic() - started_real)
