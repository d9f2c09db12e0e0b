"""What the host feeds the engine: events, telemetry and device state changes, one model for all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fieldline.wire import EventRecord

TELEMETRY = "telemetry"
DEVICE_STATE = "device.state"
MQTT_MESSAGE = "mqtt.message"


@dataclass(frozen=True, slots=True)
class Event:
    """An event: ``type`` (``telemetry``, ``device.state``, ``mqtt.message`` or any name a host or action emits),
    its ``data``, and where known the device, the MQTT topic and the time (epoch seconds)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    device_id: str | None = None
    device_type: str | None = None
    topic: str | None = None
    ts: float | None = None
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "data": self.data}
        for key in ("device_id", "device_type", "topic", "ts", "source"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_record(cls, record: EventRecord, *, default_source: str | None = None) -> Event:
        """The event a gateway's event record stands for; ``default_source`` when the record names none."""
        return cls(
            record.type,
            record.data,
            device_id=record.device_id,
            device_type=record.device_type,
            ts=record.ts,
            source=record.source or default_source,
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        return cls(
            type=str(raw["type"]),
            data=dict(raw.get("data") or {}),
            device_id=raw.get("device_id"),
            device_type=raw.get("device_type"),
            topic=raw.get("topic"),
            ts=raw.get("ts"),
            source=raw.get("source"),
        )
