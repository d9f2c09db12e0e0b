"""The per-address token bucket of the public PKI endpoints, on a fake clock, and the 429 the API answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certs import generate_key, make_csr
from cloud_core.rate_limit import RateLimiter
from cloud_core.settings import CloudSettings, PkiSettings
from tests.cloud_core.cloudkit import running_cloud


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    limit = RateLimiter(per_minute=6, burst=3, clock=clock)  # one token every 10 s
    assert [limit.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.wait("a") == pytest.approx(10.0)
    assert limit.wait("b") == 0.0  # every address has its own bucket
    clock.now = 4.0
    assert limit.wait("a") == pytest.approx(6.0)  # a refused request takes nothing
    clock.now = 10.0
    assert limit.wait("a") == 0.0
    assert limit.wait("a") == pytest.approx(10.0)
    clock.now = 1000.0
    assert [limit.wait("a") for _ in range(4)][-1] > 0  # refilled to the burst, not beyond


def test_the_table_of_addresses_is_bounded() -> None:
    clock = FakeClock()
    limit = RateLimiter(per_minute=1, burst=1, clock=clock, max_clients=2)
    assert limit.wait("a") == 0.0
    assert limit.wait("a") > 0
    limit.wait("b")
    limit.wait("c")  # "a" was the least recently seen: forgotten, with its empty bucket
    assert limit.wait("a") == 0.0


async def test_enroll_answers_429_with_retry_after_past_the_limit(tmp_path: Path) -> None:
    settings = CloudSettings(data_dir=tmp_path / "cloud", pki=PkiSettings(public_rate=1, public_burst=2))
    csr = make_csr(generate_key(), "gw-1").public_bytes(Encoding.PEM).decode()
    async with running_cloud(tmp_path, settings) as cloud, cloud.client(None) as anonymous:
        answers = [
            await anonymous.post("/api/v1/pki/enroll", json={"token": "flenr_guess", "csr": csr})
            for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [403, 403, 429]
    refused = answers[-1]
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"] == "urn:fieldline:problem:rate-limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "at most 1 enrollment and renewal requests a minute from one address" in refused.json()["detail"]
