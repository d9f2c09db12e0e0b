"""Processes used by the throughput benchmark: a fast publisher and bare counting subscribers.

Each subscriber connects with a persistent session, subscribes, disconnects (``prepare``) and later reconnects to
drain the backlog the broker queued meanwhile (``drain``), printing one JSON line: messages and seconds from the
first to the last message received. Draining a queued backlog measures the receive path alone, independent of
how fast a publisher can publish on the same two cores.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from collections.abc import Iterator

TOPIC_FILTER = "devices/+/telemetry"


def telemetry(count: int, devices: int, start_ts: float) -> Iterator[tuple[str, bytes]]:
    """``(topic, payload)`` of the benchmark's messages: every device at 1 Hz of device time from ``start_ts``."""
    import orjson

    rng = random.Random(42)
    base = [rng.uniform(15, 30) for _ in range(devices)]  # each device its own level, plus noise
    for i in range(count):
        device = i % devices
        ts = start_ts + (i // devices)
        temperature = base[device] + 2 * math.sin(ts / 600 + device) + rng.gauss(0, 0.2)
        humidity = 45 - (temperature - 22) * 1.5 + rng.gauss(0, 0.8)
        payload = orjson.dumps(
            {"ts": ts, "metrics": {"temperature": round(temperature, 2), "humidity": round(humidity, 1)}}
        )
        yield f"devices/dev-{device:04d}/telemetry", payload


def publish(port: int, count: int, devices: int, start_ts: float) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    raw_bytes = 0
    last = None
    for i, (topic, payload) in enumerate(telemetry(count, devices, start_ts)):
        raw_bytes += len(payload)
        last = client.publish(topic, payload, 1)
        if i % 20_000 == 19_999:  # keep message ids (16 bits) from wrapping onto unacknowledged ones
            last.wait_for_publish(600)
    last.wait_for_publish(600)
    while client._out_messages:  # every PUBACK in
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"published": count, "raw_bytes": raw_bytes}))


def paho_subscriber(port: int, qos: int, count: int | None) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    state = {"n": 0, "t0": 0.0, "t1": 0.0}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{qos}", clean_session=False)
    client.max_inflight_messages_set(0)

    def on_message(c, _u, _m) -> None:
        state["n"] += 1
        if state["n"] == 1:
            state["t0"] = time.perf_counter()
        if count is not None and state["n"] >= count:
            state["t1"] = time.perf_counter()
            c.disconnect()

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(TOPIC_FILTER, qos)
    if count is None:
        client.on_subscribe = lambda c, *a: c.disconnect()
    client.connect("127.0.0.1", port)
    client.loop_forever()
    if count is not None:
        _report("paho-mqtt", qos, state["n"], state["t1"] - state["t0"])


def aiomqtt_subscriber(port: int, qos: int, count: int | None) -> None:
    import aiomqtt

    async def main() -> None:
        async with aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=f"bench-aiomqtt-{qos}",
            clean_session=False,
            max_queued_incoming_messages=0,
        ) as client:
            await client.subscribe(TOPIC_FILTER, qos)
            if count is None:
                return
            n, t0 = 0, 0.0
            async for _ in client.messages:
                n += 1
                if n == 1:
                    t0 = time.perf_counter()
                if n >= count:
                    break
            _report("aiomqtt", qos, n, time.perf_counter() - t0)

    asyncio.run(main())


def gmqtt_subscriber(port: int, qos: int, count: int | None) -> None:
    from gmqtt import Client

    async def main() -> None:
        done = asyncio.Event()
        state = {"n": 0, "t0": 0.0, "t1": 0.0}
        client = Client(f"bench-gmqtt-{qos}", clean_session=False, session_expiry_interval=3600)

        def on_message(_c, _topic, _payload, _qos, _props) -> int:
            state["n"] += 1
            if state["n"] == 1:
                state["t0"] = time.perf_counter()
            if count is not None and state["n"] >= count:
                state["t1"] = time.perf_counter()
                done.set()
            return 0

        subscribed = asyncio.Event()
        client.on_message = on_message
        client.on_subscribe = lambda *a: subscribed.set()
        await client.connect("127.0.0.1", port)
        client.subscribe(TOPIC_FILTER, qos=qos)
        await subscribed.wait()
        if count is not None:
            await done.wait()
            _report("gmqtt", qos, state["n"], state["t1"] - state["t0"])
        await client.disconnect()

    asyncio.run(main())


def _report(client: str, qos: int, n: int, seconds: float) -> None:
    print(json.dumps({"client": client, "qos": qos, "messages": n, "seconds": seconds, "rate": n / seconds}))


SUBSCRIBERS = {"paho-mqtt": paho_subscriber, "aiomqtt": aiomqtt_subscriber, "gmqtt": gmqtt_subscriber}

if __name__ == "__main__":
    role = sys.argv[1]
    if role == "publish":
        publish(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        port, qos = int(sys.argv[2]), int(sys.argv[3])
        count = int(sys.argv[4]) if len(sys.argv) > 4 else None  # none: prepare the session only
        SUBSCRIBERS[role](port, qos, count)
