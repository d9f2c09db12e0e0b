"""Device payload decoding rate, against the bare parser on the same bytes measured in the same run.

    python bench/decode.py [--iterations 200000] [--repeat 3] [--out bench/results/decode.json]

For each payload (a typical Fieldline object as JSON and as CBOR, and a 3-record SenML pack as JSON and
as CBOR), ``decode_telemetry`` runs ``--iterations`` times in a loop, and so does the bare parser
(``orjson.loads`` or ``cbor2.loads``) on the same bytes; the best of ``--repeat`` runs is kept.
``overhead_us`` is the time per message spent beyond the bare parse: validation, timestamps, SenML
resolution and building the points.
Prints one JSON document (and writes it with --out).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cbor2
import orjson
from _output import emit

from fieldline.payloads import decode_telemetry

RECEIVED_AT = 1732262400.5
DEVICE = "dev-0001"
OBJECT = {"ts": 1732262400.123, "metrics": {"temperature": 21.5, "humidity": 40.2}}
SENML = [
    {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1732262400, "n": "temperature", "u": "Cel", "v": 21.5},
    {"n": "humidity", "u": "%RH", "v": 40.2},
    {"n": "pressure", "u": "hPa", "v": 1013.2},
]
SENML_CBOR_LABELS = {"bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2}

PAYLOADS: dict[str, tuple[bytes, Callable[[bytes], Any]]] = {
    # the object is written the way the brief and the simulator write it: compact, ts first
    "fieldline_json": (b'{"ts":1732262400.123,"metrics":{"temperature":21.5,"humidity":40.2}}', orjson.loads),
    "fieldline_cbor": (cbor2.dumps(OBJECT), cbor2.loads),
    "senml_json": (orjson.dumps(SENML), orjson.loads),
    "senml_cbor": (
        cbor2.dumps([{SENML_CBOR_LABELS[k]: v for k, v in r.items()} for r in SENML]),
        cbor2.loads,
    ),
}


def rate(call: Callable[[], Any], iterations: int, repeat: int) -> float:
    """Best calls per second over ``repeat`` timed loops of ``iterations`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(iterations):
            call()
        best = min(best, time.perf_counter() - start)
    return iterations / best


def measure(iterations: int, repeat: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, (payload, parse) in PAYLOADS.items():
        points = decode_telemetry(payload, DEVICE, RECEIVED_AT)  # refuses loudly if the fixture is wrong
        decoded = rate(lambda p=payload: decode_telemetry(p, DEVICE, RECEIVED_AT), iterations, repeat)
        bare = rate(lambda p=payload, f=parse: f(p), iterations, repeat)
        results[name] = {
            "bytes": len(payload),
            "points": len(points),
            "metrics": sum(len(p.metrics) for p in points),
            "decode_msgs_per_s": round(decoded),
            "bare_parse_msgs_per_s": round(bare),
            "bare_parser": f"{parse.__module__}.{parse.__name__}",
            "decode_us": round(1e6 / decoded, 3),
            "overhead_us": round(1e6 / decoded - 1e6 / bare, 3),
            "decode_vs_bare": round(decoded / bare, 3),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {
        "benchmark": "payload_decode",
        "iterations": args.iterations,
        "repeat": args.repeat,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "orjson": version("orjson"),
        "cbor2": version("cbor2"),
        "results": measure(args.iterations, args.repeat),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
