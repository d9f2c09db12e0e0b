"""Telemetry on the wire: aligned series of one device or of many, and the latest values per device.

Series carry one ``timestamps`` array (bucket starts, epoch milliseconds UTC) and, per metric, one value per
bucket (null where the bucket holds no data); latest values carry an RFC 3339 ``time``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from cloud_core.schemas.timestamps import UtcDateTime
from cloud_core.tsdb import Aggregation, Answer, Latest

SeriesValues = dict[str, list[float | None]]


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class _Range(BaseModel):
    start: UtcDateTime = Field(description="start of the first bucket (the requested start rounded down)")
    end: UtcDateTime = Field(description="end of the last bucket, exclusive (the requested end rounded up)")
    every_ms: int = Field(description="bucket width in milliseconds; buckets start at multiples of it (UTC)")
    agg: Aggregation
    timestamps: list[int] = Field(description="bucket starts, epoch milliseconds")

    @staticmethod
    def fields_of(answer: Answer) -> dict[str, object]:
        q = answer.query
        return {
            "start": from_ms(q.start),
            "end": from_ms(q.end),
            "every_ms": q.every,
            "agg": q.agg,
            "timestamps": list(q.buckets),
        }


class DeviceTelemetry(_Range):
    """One device's metrics aggregated into aligned buckets."""

    device_id: str
    series: SeriesValues = Field(description="per metric, one value per bucket (null: no data)")

    @classmethod
    def of(cls, answer: Answer, device_id: str) -> DeviceTelemetry:
        return cls(device_id=device_id, series=answer.series.get(device_id, {}), **cls.fields_of(answer))


class DeviceSeries(BaseModel):
    device_id: str
    series: SeriesValues = Field(description="per metric, one value per bucket (null: no data)")


class FleetTelemetry(_Range):
    """Several devices' metrics aggregated into the same aligned buckets."""

    devices: list[DeviceSeries]

    @classmethod
    def of(cls, answer: Answer) -> FleetTelemetry:
        devices = [DeviceSeries(device_id=d, series=s) for d, s in answer.series.items()]
        return cls(devices=devices, **cls.fields_of(answer))


class LatestValue(BaseModel):
    time: UtcDateTime
    value: float

    @classmethod
    def of(cls, latest: Latest) -> LatestValue:
        return cls(time=from_ms(latest.ts), value=latest.value)


class DeviceLatest(BaseModel):
    device_id: str
    metrics: dict[str, LatestValue] = Field(
        description="per metric, its newest value (absent: none in range)"
    )


class LatestTelemetry(BaseModel):
    """The newest value of each metric of each device, looking back ``within_s`` seconds from ``at``."""

    at: UtcDateTime
    within_s: float
    devices: list[DeviceLatest]

    @classmethod
    def of(cls, at: int, within: int, found: dict[str, dict[str, Latest]]) -> LatestTelemetry:
        devices = [
            DeviceLatest(device_id=d, metrics={m: LatestValue.of(v) for m, v in metrics.items()})
            for d, metrics in found.items()
        ]
        return cls(at=from_ms(at), within_s=within / 1000, devices=devices)
