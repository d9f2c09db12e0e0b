"""Ingest: device messages from any transport become points, go through the pipelines and into the committer.

MQTT messages arrive synchronously from the local-broker link, the PUBLISHes of one socket read together: they
share one arrival time (one clock reading), one update of the counters, one hand-over of the points to journal
and one acknowledgement callback for their QoS 1 messages. CoAP requests call ``submit`` and wait for durability
before answering. A payload that fails decoding is quarantined with its reason and never stops the
flow; device state messages become state records and teach the router device types. With automation configured,
``feed`` receives every change of a device's state (the pipelines' tap receives the cleaned points).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from edge_agent.committer import Committer
from edge_agent.metrics import AgentMetrics
from edge_agent.mqtt_subscriber import InboundMessage, MqttSubscriber
from edge_agent.pipeline.pipeline import PipelineRouter
from edge_agent.quarantine import QuarantineEntry
from fieldline.errors import PayloadError
from fieldline.payloads import decode_telemetry
from fieldline.wire import Point, StateRecord, parse_device_topic, valid_id

if TYPE_CHECKING:
    from edge_agent.automation_feed import AutomationFeed

log = logging.getLogger(__name__)

MAX_STATE_BYTES = 16384


class Ingest:
    """The single entry point for device data; implements the CoAP server's ``TelemetryIngest``."""

    def __init__(
        self,
        committer: Committer,
        router: PipelineRouter,
        metrics: AgentMetrics,
        device_types: dict[str, str],
        *,
        max_payload: int,
        max_future_skew: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.committer = committer
        self.router = router
        self.metrics = metrics
        self.device_types = device_types
        self.max_payload = max_payload
        self.max_future_skew = max_future_skew
        self.clock = clock
        self.device_states: dict[str, str] = {}
        self.feed: AutomationFeed | None = None

    # ------------------------------------------------------------------ MQTT (synchronous, loop thread)

    def on_mqtt_messages(self, messages: list[InboundMessage], link: MqttSubscriber) -> None:
        """Handle the PUBLISHes of one socket read; QoS 1 messages are acknowledged after the next commit."""
        n = len(messages)
        self.metrics.received["mqtt"] += n
        committer = self.committer
        committer.count_message(n)
        now = self.clock()
        process = self.router.process
        max_payload = self.max_payload
        skew = self.max_future_skew
        held: list[Point] = []
        decoded = 0
        for message in messages:
            topic = message.topic
            payload = message.payload
            try:
                device_id = telemetry_device(topic)
                if device_id is None:
                    self._route(topic, payload, now)
                    continue
                try:
                    points = decode_telemetry(
                        payload, device_id, now, max_bytes=max_payload, max_future_skew=skew
                    )
                except PayloadError as exc:
                    self._quarantine(now, "mqtt", topic, device_id, exc, payload)
                    continue
                decoded += len(points)
                for point in points:
                    kept = process(point, now)
                    if kept is not None:
                        held.append(kept)
            except Exception as exc:
                log.exception("message processing failed", extra={"topic": topic})
                self._quarantine(now, "mqtt", topic, None, PayloadError("internal_error", repr(exc)), payload)
        self.metrics.points["mqtt"] += decoded
        if held:
            committer.journal(held)
        mids = [message.mid for message in messages if message.qos]
        if mids:
            committer.after_commit(partial(link.ack_ids, mids), len(mids))

    def _route(self, topic: str, payload: bytes, now: float) -> None:
        """Any topic but a device's telemetry: a device state, or quarantined when not a device topic."""
        parsed = parse_device_topic(topic)
        if parsed is None:
            error = PayloadError("bad_topic", f"not a device topic: {topic}")
            self._quarantine(now, "mqtt", topic, None, error, payload)
            return
        device_id, kind = parsed
        if kind == "state":
            self._state(device_id, payload, now, topic)

    # ------------------------------------------------------------------ CoAP (asynchronous)

    async def submit(self, device_id: str, payload: bytes, content_format: str | None, *, source: str) -> int:
        """Decode, process and wait for durability; raises ``PayloadError`` after quarantining a bad payload."""
        self.metrics.received[source] += 1
        self.committer.count_message()
        now = self.clock()
        error: PayloadError | None = None
        try:
            accepted = self._decode_and_process(device_id, payload, content_format, now, source)
        except PayloadError as exc:
            self._quarantine(now, source, None, device_id, exc, payload)
            error, accepted = exc, 0
        await self.committer.durable()
        if error is not None:
            raise error
        return accepted

    def reject(self, device_id: str | None, payload: bytes, reason: str, detail: str, *, source: str) -> None:
        """Quarantine a request its transport refused before decoding (e.g. CoAP over ``max_payload``)."""
        self.metrics.received[source] += 1
        self._quarantine(self.clock(), source, None, device_id, PayloadError(reason, detail), payload)

    # ------------------------------------------------------------------ shared

    def _decode_and_process(
        self, device_id: str, payload: bytes, content_format: str | None, now: float, source: str
    ) -> int:
        points = decode_telemetry(
            payload,
            device_id,
            now,
            content_format=content_format,
            max_bytes=self.max_payload,
            max_future_skew=self.max_future_skew,
        )
        self.metrics.points[source] += len(points)
        process = self.router.process
        held = [kept for point in points if (kept := process(point, now)) is not None]
        if held:
            self.committer.journal(held)
        return len(points)

    def _state(self, device_id: str, payload: bytes, now: float, topic: str) -> None:
        """``devices/{id}/state``: a bare word (``online``) or JSON ``{"state": ..., "attributes": {...}}``."""
        try:
            state, attributes = parse_state(device_id, payload)
        except PayloadError as exc:
            self._quarantine(now, "mqtt", topic, device_id, exc, payload)
            return
        device_type = attributes.get("type")
        if isinstance(device_type, str) and self.device_types.get(device_id) != device_type:
            self.device_types[device_id] = device_type
            self.router.forget_route(device_id)
        previous = self.device_states.get(device_id)
        if previous != state or attributes:
            self.device_states[device_id] = state
            self.committer.emit(StateRecord(device_id, now, state, attributes))
            if previous != state and self.feed is not None:
                self.feed.state(device_id, self.device_types.get(device_id), previous, state, attributes, now)

    def _quarantine(
        self,
        now: float,
        source: str,
        topic: str | None,
        device_id: str | None,
        exc: PayloadError,
        payload: bytes,
    ) -> None:
        self.committer.quarantine(
            QuarantineEntry(now, source, topic, device_id, exc.reason, str(exc), payload)
        )


def telemetry_device(topic: str) -> str | None:
    """The device id of a ``devices/{id}/telemetry`` topic (as ``parse_device_topic`` splits it), else None."""
    if topic.startswith("devices/") and topic.endswith("/telemetry"):
        device_id = topic[8:-10]
        if device_id and "/" not in device_id:
            return device_id
    return None


def parse_state(device_id: str, payload: bytes) -> tuple[str, dict[str, Any]]:
    """Parse a device state message; raises ``PayloadError`` when it is neither a word nor the JSON form."""
    if not valid_id(device_id):
        raise PayloadError("bad_device_id", f"invalid device id {device_id!r}", device_id=device_id)
    if not payload:
        raise PayloadError("empty", "empty state message", device_id=device_id)
    if len(payload) > MAX_STATE_BYTES:
        raise PayloadError("too_large", f"state message over {MAX_STATE_BYTES} bytes", device_id=device_id)
    text = payload.strip()
    if text[:1] != b"{":
        word = text.decode("utf-8", "replace")
        if not word.isidentifier() or len(word) > 32:
            raise PayloadError("bad_shape", "state must be a word such as online/offline, or a JSON object")
        return word, {}
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("bad_json", f"invalid JSON: {exc}", device_id=device_id) from None
    state = data.get("state") if isinstance(data, dict) else None
    attributes = data.get("attributes", {}) if isinstance(data, dict) else None
    if (
        not isinstance(state, str)
        or not isinstance(attributes, dict)
        or set(data) - {"state", "attributes", "ts"}
    ):
        raise PayloadError("bad_shape", 'expected {"state": str, "attributes": {...}}', device_id=device_id)
    return state, attributes
