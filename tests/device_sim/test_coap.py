"""CoAP devices against the gateway's CoAP server (edge_agent.southbound_coap, aiocoap over real UDP): every codec
with its Content-Format, decoded by the gateway's own decoder; malformed payloads answered 4.00 and counted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from device_sim.coap_transport import CoapSender, coap_base
from device_sim.runner import LiveRun, RunOptions
from edge_agent.southbound_coap import CoapConfig, CoapServer
from fieldline.payloads import decode_telemetry
from tests.device_sim.runkit import START, fleet

PROBES = (
    """\
seed: 5
devices:
"""
    + "".join(
        f"""\
  - type: probe
    id: {codec.replace("_", "-")}-{{n}}
    count: 2
    transport: coap
    codec: {codec}
    interval: 10s
    metrics:
      level: {{type: random_walk, start: 50, step: 1, min: 0, max: 100}}
"""
        for codec in ("json", "cbor", "senml", "senml_cbor")
    )
    + """\
  - type: probe
    id: broken-{n}
    transport: coap
    interval: 10s
    metrics:
      level: {type: constant, value: 1}
    faults:
      - {type: truncated_json, probability: 1}
"""
)


class DecodingIngest:
    """Decodes like the agent does and remembers what arrived."""

    def __init__(self) -> None:
        self.points: Counter[str] = Counter()
        self.formats: Counter[str | None] = Counter()

    def reject(self, device_id: str | None, payload: bytes, reason: str, detail: str, *, source: str) -> None:
        self.formats["rejected"] += 1

    async def submit(self, device_id: str, payload: bytes, content_format: str | None, *, source: str) -> int:
        points = decode_telemetry(
            payload, device_id, START + 1e6, content_format=content_format, max_future_skew=1e9
        )
        self.points[device_id] += len(points)
        self.formats[content_format] += 1
        return len(points)


async def test_coap_devices_post_every_codec(tmp_path: Path) -> None:
    ingest = DecodingIngest()
    codes: list[str] = []
    async with CoapServer(CoapConfig(bind="127.0.0.1", port=0), ingest, metrics_hook=codes.append) as server:
        options = RunOptions(
            coap=f"coap://127.0.0.1:{server.port}", duration=60, speed=60, start=START, progress=False
        )
        summary = await LiveRun(fleet(tmp_path, PROBES), options).run()
    assert summary["devices"] == {"mqtt": 0, "coap": 9}
    produced = summary["produced"]["telemetry"]
    assert summary["published"] == produced == summary["coap"]["sent"]
    broken = summary["faults"]["truncated_json"]
    assert summary["coap"]["answers"] == {"2.04": produced - broken, "4.00": broken}
    assert Counter(codes) == {"2.04": produced - broken, "4.00": broken}
    assert set(ingest.formats) == {"json", "cbor", "senml+json", "senml+cbor"}
    assert all(
        ingest.points[f"{codec}-{n}"] > 0 for codec in ("json", "cbor", "senml", "senml-cbor") for n in (1, 2)
    )


async def test_unanswered_posts_time_out_and_are_counted() -> None:
    async with CoapSender("coap://127.0.0.1:9", within=0.5) as sender:  # discard port: nobody answers
        assert sender.post("dev-1", b"{}", 50)
        await sender.drain()
    assert sender.codes["2.04"] == 0
    assert sender.codes["timeout"] + sender.codes["error"] == 1


def test_coap_base() -> None:
    assert coap_base("coap://gw.local") == "coap://gw.local:5683"
    assert coap_base("coap://[::1]:5700/t") == "coap://[::1]:5700"
    for bad in ("mqtt://x:1", "coap://"):
        with pytest.raises(ValueError, match="not a CoAP endpoint"):
            coap_base(bad)
