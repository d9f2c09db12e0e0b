"""Processes used by bench/sim_scale.py, each printing one JSON line.

footprint <client> <port> <n>     open n device connections with that client (device_sim or aiomqtt), each
                                  with a last will; report the connect rate and the RSS they cost
count <port> <filter> <seconds>   a bare counting subscriber (device_sim's client, QoS 0): messages and the
                                  rate between the first and the last one, stopping after <seconds> of silence
raw <port> <seconds>              the baseline publisher: one socket writing precomputed QoS 0 PUBLISH packets
                                  as fast as the broker takes them
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS")))


async def footprint(client: str, port: int, n: int) -> dict[str, object]:
    from device_sim.mqtt_client import MqttClient, Will
    from device_sim.mqtt_transport import raise_open_files_limit

    raise_open_files_limit()
    before = rss_kb()
    held: list[object] = []
    stack = contextlib.AsyncExitStack()
    sem = asyncio.Semaphore(64)
    started = time.perf_counter()

    async def one(i: int) -> None:
        device_id = f"fp-{i:05d}"
        will_payload = b'{"online": false}'
        async with sem:
            if client == "device_sim":
                c = MqttClient(
                    "127.0.0.1", port, device_id, will=Will(f"devices/{device_id}/state", will_payload)
                )
                await c.connect(within=60)
                held.append(c)
            else:
                import aiomqtt

                c = aiomqtt.Client(
                    "127.0.0.1",
                    port,
                    identifier=device_id,
                    will=aiomqtt.Will(f"devices/{device_id}/state", will_payload, 1, True),
                    timeout=60,
                )
                await stack.enter_async_context(c)
                held.append(c)

    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1)
    after = rss_kb()
    result = {
        "client": client,
        "connections": len(held),
        "connect_rate": round(n / elapsed, 1),
        "rss_mb": round(after / 1024, 1),
        "kb_per_connection": round((after - before) / n, 2),
    }
    for c in held:
        if isinstance(c, MqttClient):
            await c.disconnect()
    await stack.aclose()
    return result


async def count(port: int, topic_filter: str, silence: float) -> dict[str, object]:
    from device_sim.mqtt_client import MqttClient

    state = {"n": 0, "t0": 0.0, "t1": 0.0}

    def on_message(_message: object) -> None:
        state["n"] += 1
        state["t1"] = time.perf_counter()
        if state["n"] == 1:
            state["t0"] = state["t1"]

    client = MqttClient("127.0.0.1", port, f"bench-count-{time.time_ns()}", on_message=on_message)
    await client.connect()
    await client.subscribe([(topic_filter, 0)])
    print(json.dumps({"ready": True}), flush=True)
    while True:
        seen = state["n"]
        await asyncio.sleep(silence)
        if state["n"] and state["n"] == seen:
            break
    await client.disconnect()
    span = state["t1"] - state["t0"]
    return {
        "received": state["n"],
        "seconds": round(span, 3),
        "rate": round(state["n"] / span, 1) if span else 0.0,
    }


def raw(port: int, seconds: float) -> dict[str, object]:
    from fieldline.mqtt_packets import mqtt_string, packet, publish_packet

    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(packet(0x10, mqtt_string("MQTT") + b"\x04\x02\x00\x3c" + mqtt_string("bench-raw")))
    sock.recv(4)
    payload = b'{"ts":1700000000.0,"metrics":{"temperature":21.53,"humidity":44.2}}'
    batch = b"".join(
        publish_packet(f"devices/raw-{i % 1000:04d}/telemetry", payload, v5=False) for i in range(1000)
    )
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        sock.sendall(batch)
        sent += 1000
    elapsed = time.perf_counter() - started
    sock.sendall(b"\xe0\x00")
    sock.close()
    return {"sent": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed, 1)}


def main() -> None:
    kind, *args = sys.argv[1:]
    if kind == "footprint":
        result = asyncio.run(footprint(args[0], int(args[1]), int(args[2])))
    elif kind == "count":
        result = asyncio.run(count(int(args[0]), args[1], float(args[2])))
    else:
        result = raw(int(args[0]), float(args[1]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
