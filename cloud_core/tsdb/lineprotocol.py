"""Points as InfluxDB line protocol, the format VictoriaMetrics and InfluxDB 2 both take.

One line per point: ``fieldline,device=<id> <name>=<value>,... <ts>`` with millisecond timestamps. In
VictoriaMetrics the series becomes ``fieldline_<name>{device="<id>"}`` (measurement, ``_``, field name).
Device ids (``fieldline.wire.ID_PATTERN``) and series names (``fieldline.payloads.NAME_PATTERN``, ``@`` and an
aggregate name) hold no character that line protocol would need escaped, which is what makes the encoder cheap:
the values map of each point is serialised by orjson and its JSON punctuation rewritten in bulk.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from cloud_core.tsdb.model import Point

MEASUREMENT = "fieldline"


def encode(points: Iterable[Point], measurement: str = MEASUREMENT) -> bytes:
    """The points as line protocol (millisecond precision), lines separated by ``\\n``.

    Values must be finite floats and names valid (``points_from_batch`` guarantees both).
    """
    prefixes: dict[str, bytes] = {}
    lines: list[bytes] = []
    append = lines.append
    dumps = orjson.dumps
    for device, ts, values in points:
        prefix = prefixes.get(device)
        if prefix is None:
            prefix = prefixes[device] = f"{measurement},device={device} ".encode()
        # {"a":1.5,"b:c":2.0} -> "a":1.5,"b:c":2.0 ; the ":" rewrite below needs the closing quote of the key
        append(prefix + dumps(values)[1:-1] + b" %d" % ts)
    return b"\n".join(lines).replace(b'":', b"=").replace(b'"', b"")
