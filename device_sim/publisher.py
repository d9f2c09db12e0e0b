"""Simulated devices publishing telemetry: a sine wave with noise per device, with faults now and then.

This is the small publisher `fieldline demo` and bench/edge_throughput.py use (many devices over one paho
connection). The fleet simulator (fleet files, fault schedules, actuators, one connection per device) is
``device_sim.runner``; docs/simulator.md describes it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class SimulatedDevice:
    device_id: str
    rng: random.Random
    period: float = 300.0
    base: float = 21.0
    amplitude: float = 3.0
    fault_rate: float = 0.0
    phase: float = field(init=False)

    def __post_init__(self) -> None:
        self.phase = self.rng.uniform(0, 2 * math.pi)

    def reading(self, ts: float) -> tuple[bytes, str]:
        """The next payload and what it is (``ok``, ``spike``, ``malformed``)."""
        temperature = self.base + self.amplitude * math.sin(2 * math.pi * ts / self.period + self.phase)
        temperature += self.rng.gauss(0, 0.1)
        humidity = 45 - (temperature - self.base) * 2 + self.rng.gauss(0, 0.5)
        kind = "ok"
        if self.rng.random() < self.fault_rate:
            kind = self.rng.choice(["spike", "malformed"])
        if kind == "malformed":
            return b'{"ts": ' + str(ts).encode() + b', "metrics": {"temperature": ', kind
        if kind == "spike":
            temperature = 999.0
        metrics = {
            "temperature": round(temperature, 3),
            "humidity": round(humidity, 2),
            "door": self.rng.random() < 0.05,
        }
        return orjson.dumps({"ts": round(ts, 3), "metrics": metrics}), kind


class MqttPublishers:
    """Many simulated devices multiplexed over one MQTT connection (a thread of its own, paho's loop)."""

    def __init__(
        self,
        port: int,
        count: int,
        *,
        interval: float = 1.0,
        fault_rate: float = 0.01,
        seed: int = 1,
        prefix: str = "thermo",
        clock: Callable[[], float] = time.time,
    ) -> None:
        rng = random.Random(seed)
        self.devices = [
            SimulatedDevice(f"{prefix}-{i:03d}", random.Random(rng.random()), fault_rate=fault_rate)
            for i in range(count)
        ]
        self.interval = interval
        self.clock = clock
        self.port = port
        self.sent = 0
        self.bytes = 0
        self.faults = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{prefix}-{seed}")
        self.client.max_inflight_messages_set(1000)

    async def run(self, qos: int = 1) -> None:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        try:
            for device in self.devices:
                self.client.publish(
                    f"devices/{device.device_id}/state",
                    orjson.dumps({"state": "online", "attributes": {"type": "thermo"}}),
                    1,
                    True,
                )
            while True:
                started = self.clock()
                for device in self.devices:
                    payload, kind = device.reading(self.clock())
                    self.client.publish(f"devices/{device.device_id}/telemetry", payload, qos)
                    self.sent += 1
                    self.bytes += len(payload)
                    self.faults += kind != "ok"
                await asyncio.sleep(max(0.0, self.interval - (self.clock() - started)))
        finally:
            self.client.disconnect()
            self.client.loop_stop()
