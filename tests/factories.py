"""Builders for test objects: agent configurations, device publishers, devices that take commands and a
cloud-side batch collector."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig
from fieldline.wire import AggregateRecord, Batch, EventRecord, RawRecord, RecordKind, decode_batch


def agent_config(
    tmp_path: Path,
    local_url: str,
    cloud_url: str | None,
    *,
    gateway: str = "gw-test",
    pipelines: list[dict[str, Any]] | None = None,
    **sections: Any,
) -> AgentConfig:
    """An agent configuration for tests: its own database, a free status port, fast batching."""
    data: dict[str, Any] = {
        "gateway": {"id": gateway},
        "southbound": {"mqtt": {"url": local_url, "qos": 1}},
        "uplink": {
            "url": cloud_url or "mqtt://127.0.0.1:1",
            "enabled": cloud_url is not None,
            "backoff": {"initial": "100ms", "max": "1s"},
        },
        "storage": {
            "path": str(tmp_path / f"{gateway}.db"),
            "sync": "normal",
            "batch_max_age": "200ms",
            "commit_interval": "20ms",
        },
        "http": {"port": 0},
        "pipelines": pipelines or [],
        "logging": {"format": "text"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            for sub, subvalue in value.items():
                if isinstance(subvalue, dict) and isinstance(data[key].get(sub), dict):
                    data[key][sub] = {**data[key][sub], **subvalue}
                else:
                    data[key][sub] = subvalue
        else:
            data[key] = value
    return AgentConfig.model_validate(data)


class Publisher:
    """A device-side MQTT client with its own network thread; ``publish`` waits for the broker's PUBACK."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos, retain)

    def telemetry(
        self, device_id: str, ts: float, metrics: dict[str, Any], qos: int = 1
    ) -> paho.MQTTMessageInfo:
        return self.publish(
            f"devices/{device_id}/telemetry", orjson.dumps({"ts": ts, "metrics": metrics}), qos
        )

    def wait_all(self, infos: Iterable[paho.MQTTMessageInfo], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CommandDevice:
    """A device on the local broker: records the commands it receives on ``devices/{id}/commands`` and, when
    ``answer`` returns a reply for one (``{"status": "ok", "result": ...}``), acknowledges it on ``.../ack``."""

    def __init__(
        self,
        port: int,
        device_id: str,
        answer: Callable[[dict[str, Any]], dict[str, Any] | None] = lambda command: None,
    ) -> None:
        self.device_id = device_id
        self.answer = answer
        self.commands: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-device-{device_id}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(f"devices/{device_id}/commands", 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError(f"device {device_id} could not subscribe")

    def _on_message(self, client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        command = orjson.loads(msg.payload)
        with self._lock:
            self.commands.append(command)
        reply = self.answer(command)
        if reply is not None:
            client.publish(
                f"devices/{self.device_id}/commands/ack", orjson.dumps({"id": command["id"], **reply}), 1
            )

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.commands)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CloudCollector:
    """Subscribes to every gateway's uplink on the cloud broker and keeps each batch it receives, in order."""

    def __init__(self, port: int, client_id: str = "test-cloud", tls: ssl.SSLContext | None = None) -> None:
        self.batches: list[Batch] = []
        self.topics: list[str] = []  # the topic of each batch, in the same order
        self.statuses: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        # A persistent session: while the broker restarts, it keeps queueing the uplink for this subscriber.
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, protocol=paho.MQTTv311
        )
        self.client.reconnect_delay_set(0.05, 0.5)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_disconnect = lambda *a: subscribed.clear()
        self.client.on_connect = lambda c, *a: c.subscribe(
            [("fl/+/up/telemetry", 1), ("fl/+/up/events", 1), ("fl/+/up/status", 1)]
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("cloud collector could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            if msg.topic.endswith("/status"):
                self.statuses.append(orjson.loads(msg.payload))
                return
            try:
                self.batches.append(decode_batch(msg.payload))
                self.topics.append(msg.topic)
            except Exception as exc:  # noqa: BLE001 - recorded, and tests assert there are none
                self.errors.append(repr(exc))

    def unique_batches(self) -> list[Batch]:
        """Batches deduplicated by (gateway, seq), as the cloud's ingest does."""
        seen: set[tuple[str, int]] = set()
        out = []
        with self._lock:
            for batch in self.batches:
                if (batch.gateway, batch.seq) not in seen:
                    seen.add((batch.gateway, batch.seq))
                    out.append(batch)
        return out

    def records(self) -> list[Any]:
        return [r for b in self.unique_batches() for r in b.records]

    def raw_points(self) -> list[RawRecord]:
        return [r for r in self.records() if isinstance(r, RawRecord)]

    def aggregates(self) -> list[AggregateRecord]:
        return [r for r in self.records() if isinstance(r, AggregateRecord)]

    def topics_of(self, kind: RecordKind) -> set[str]:
        """The topics that batches of ``kind`` arrived on."""
        with self._lock:
            return {t for t, b in zip(self.topics, self.batches, strict=True) if b.kind is kind}

    def events(self, event_type: str | None = None) -> list[EventRecord]:
        """Event records (of ``event_type``) received on ``fl/+/up/events``."""
        return [
            r
            for r in self.records()
            if isinstance(r, EventRecord) and (event_type is None or r.type == event_type)
        ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def eventually(predicate: Any, within: float = 20.0, interval: float = 0.05, message: Any = "") -> None:
    """Wait until ``predicate()`` is true; fails the test with ``message`` (or ``message()``) after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    text = message() if callable(message) else message
    raise AssertionError(text or f"condition not met within {within}s")
