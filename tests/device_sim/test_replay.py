"""Replaying recorded telemetry through a real Mosquitto; bad rows are skipped, counted and located."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from device_sim.errors import ReplayError
from device_sim.mqtt_transport import Broker
from device_sim.replay import BadRow, Row, read_rows, replay
from tests.device_sim.mqttkit import subscriber
from tests.servicekit import Mosquitto

LONG_CSV = """\
ts,device_id,metric,value
1700000000,dev-1,temperature,21.5
1700000000,dev-1,door,true
1700000000,dev-2,temperature,19
yesterday,dev-1,temperature,20
1700000001.5,dev-1,temperature,21.7
1700000001.5,bad/id,temperature,1
2023-11-14T22:13:22Z,dev-2,mode,eco
"""

WIDE_CSV = """\
ts,device_id,temperature,humidity
1700000000,dev-1,21.5,40
1700000001,dev-1,,41
1700000002,dev-1,22
1700000003,dev-1,nan,42
"""

JSONL = """\
{"ts": 1700000000, "device_id": "dev-1", "metrics": {"temperature": 21.5, "door": false}}
{"ts": 1700000001, "device_id": "dev-1", "metrics": {"temperature": [1]}}
not json
{"ts": 1700000002, "device_id": "dev-1", "metrics": {"temperature": 22.0}, "extra": 1}

{"ts": 1700000003, "device_id": "dev-3", "metrics": {"temperature": 23.0}}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_long_csv_groups_rows_and_locates_bad_ones(tmp_path: Path) -> None:
    items = list(read_rows(_write(tmp_path, "data.csv", LONG_CSV)))
    rows = [i for i in items if isinstance(i, Row)]
    bad = [str(i) for i in items if isinstance(i, BadRow)]
    assert [(r.line, r.device_id, r.metrics) for r in rows] == [
        (2, "dev-1", {"temperature": 21.5, "door": True}),
        (4, "dev-2", {"temperature": 19}),
        (6, "dev-1", {"temperature": 21.7}),
        (8, "dev-2", {"mode": "eco"}),
    ]
    assert rows[3].ts == 1700000002.0
    assert bad == [
        f"{tmp_path}/data.csv:5: ts 'yesterday' is neither epoch seconds nor an ISO 8601 time",
        f"{tmp_path}/data.csv:7: device_id 'bad/id' is not a valid device id",
    ]


def test_wide_csv(tmp_path: Path) -> None:
    items = list(read_rows(_write(tmp_path, "wide.csv", WIDE_CSV)))
    assert [(i.line, i.metrics) for i in items if isinstance(i, Row)] == [
        (2, {"temperature": 21.5, "humidity": 40}),
        (3, {"humidity": 41}),
    ]
    assert [str(i).split(": ", 1)[1] for i in items if isinstance(i, BadRow)] == [
        "3 columns where the header has 4",
        "value 'nan' is not a finite number",
    ]


def test_jsonl_bad_lines(tmp_path: Path) -> None:
    items = list(read_rows(_write(tmp_path, "data.jsonl", JSONL)))
    assert [(i.line, i.device_id) for i in items if isinstance(i, Row)] == [(1, "dev-1"), (6, "dev-3")]
    assert [i.line for i in items if isinstance(i, BadRow)] == [2, 3, 4]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("time,device,value\n1,d,2\n", "the header must be"),
        ("ts,device_id,bad name\n", "not valid"),
    ],
)
def test_unusable_files_raise(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        list(read_rows(_write(tmp_path, "x.csv", text)))


async def test_replay_sends_good_rows_with_shifted_or_original_timestamps(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    path = _write(tmp_path, "data.csv", LONG_CSV)
    bad: list[BadRow] = []
    async with subscriber(mosquitto.port, "devices/+/telemetry") as (_, received):
        summary = await replay(path, Broker.parse(mosquitto.url), speed=None, on_bad_row=bad.append)
        await received.wait_for(lambda r: len(r.messages) == 4)
        original = await replay(path, Broker.parse(mosquitto.url), speed=1000, original_timestamps=True)
        await received.wait_for(lambda r: len(r.messages) == 8)
        await asyncio.sleep(0.2)
    assert summary["sent"] == summary["acknowledged"] == 4
    assert summary["bad_rows"] == 2
    assert summary["devices"] == 2
    assert [b.line for b in bad] == [5, 7]
    assert original["sent"] == 4
    shifted = [orjson.loads(m.payload) for m in received.messages[:4]]
    kept = [orjson.loads(m.payload) for m in received.messages[4:]]
    assert [k["ts"] for k in kept] == [1700000000, 1700000000, 1700000001.5, 1700000002.0]
    assert [round(s["ts"] - shifted[0]["ts"], 3) for s in shifted] == [0, 0, 1.5, 2.0]
    assert shifted[0]["ts"] > 1700000002  # moved to the time of the replay
    assert kept[0]["metrics"] == {"temperature": 21.5, "door": True}
    assert [m.topic.value for m in received.messages[:4]] == [
        "devices/dev-1/telemetry",
        "devices/dev-2/telemetry",
        "devices/dev-1/telemetry",
        "devices/dev-2/telemetry",
    ]
