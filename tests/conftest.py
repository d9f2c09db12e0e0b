"""Shared fixtures: a fresh Mosquitto per test that asks for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servicekit import Mosquitto, free_port


def _broker(tmp_path: Path, name: str) -> Iterator[Mosquitto]:
    workdir = tmp_path / name
    workdir.mkdir()
    broker = Mosquitto(port=free_port(), workdir=workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """The gateway's local broker."""
    yield from _broker(tmp_path, "local-broker")


@pytest.fixture
def cloud_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A second broker standing for the cloud."""
    yield from _broker(tmp_path, "cloud-broker")
