"""The example fleets load, play, and send what the agent accepts; the cold chain holds its range in a closed loop."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from device_sim.device import Connection
from device_sim.fleet import load_fleet
from device_sim.population import build_devices
from fieldline.errors import PayloadError
from fieldline.payloads import CONTENT_FORMATS, decode_telemetry

FLEETS = Path(__file__).resolve().parents[2] / "examples" / "fleets"
START = 1_800_000_000.0


@pytest.mark.parametrize(
    ("name", "count"), [("building.yaml", 20), ("cold-chain.yaml", 12), ("load-5000.yaml", 5000)]
)
def test_example_fleet_loads_and_plays(name: str, count: int) -> None:
    fleet = load_fleet(FLEETS / name)
    assert fleet.device_count() == count
    devices = build_devices(fleet)
    assert len({d.device_id for d in devices}) == count
    horizon = 3600.0 if count < 100 else 20.0
    good = refused = 0
    for device in devices:
        at = device.first_tick_at(START)
        while at < START + horizon:
            tick = device.tick(at)
            for message in tick.messages:
                fmt = CONTENT_FORMATS[message.content_format]
                if message.fault and message.fault.split("+")[0] in ("truncated_json", "invalid_cbor"):
                    with pytest.raises(PayloadError):
                        decode_telemetry(message.payload, device.device_id, at, content_format=fmt)
                    refused += 1
                else:
                    decode_telemetry(message.payload, device.device_id, at, content_format=fmt)
                    good += 1
            at = tick.next_at
    assert good > count
    assert refused < good / 100


def test_building_boilers_match_the_overheat_rule() -> None:
    fleet = load_fleet(FLEETS / "building.yaml")
    boilers = next(t for t in fleet.devices if t.type == "boiler")
    assert all(i.startswith("boiler-") for i in boilers.device_ids())
    assert "cooling" in boilers.commands
    transports = {t.type: (t.transport, t.codec) for t in fleet.devices}
    assert transports["meter"] == ("coap", "senml")
    assert transports["door"] == ("mqtt", "cbor")


def test_cold_chain_closed_loop_holds_the_range() -> None:
    """A bang-bang controller (what a rule would do) keeps every reefer between -25 and -14 °C for a day."""
    devices = build_devices(load_fleet(FLEETS / "cold-chain.yaml"))
    serial = 0
    for device in devices:
        at = device.first_tick_at(START)
        cooling = False
        temperatures = []
        while at < START + 86400:
            tick = device.tick(at)
            if tick.connection is Connection.DROP:
                assert tick.offline_until is not None
            for message in tick.messages:
                metrics = orjson.loads(message.payload)["metrics"]
                temperature = metrics["temperature"]
                if (message.fault and "stuck" in message.fault) or temperature is None:
                    continue
                temperatures.append(temperature)
                assert metrics["compressor"] == (4.5 if cooling else 0.0)
                want = True if temperature > -15 else False if temperature < -22 else cooling
                if want != cooling:
                    serial += 1
                    body = {
                        "id": f"c{serial}",
                        "name": "cooling",
                        "params": {"mode": "max" if want else "off"},
                    }
                    ack = device.on_command(orjson.dumps(body), at + 1)
                    assert ack is not None
                    assert orjson.loads(ack.payload)["status"] == "ok"
                    cooling = want
            at = tick.next_at
        assert min(temperatures) > -25.5
        assert max(temperatures) < -14
        assert device.counters.commands["ok"] >= 20  # it cycled, many times
