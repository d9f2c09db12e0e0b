"""Shared fixtures: a fresh Mosquitto per test that asks for one.

Before anything of the project is imported, the compiled modules (``setup.py``) are checked: the tests refuse to
run an extension older than its source (``make build`` rebuilds it), and with ``FIELDLINE_PURE_PYTHON=1`` they
import the sources instead of the extensions, which is how ``make test`` also runs the per-message modules'
tests as plain Python.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    ExtensionFileLoader,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
)
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _refuse_stale_extensions() -> None:
    for package in ("fieldline", "edge_agent"):
        for suffix in EXTENSION_SUFFIXES:
            for extension in (ROOT / package).rglob(f"*{suffix}"):
                stem = extension.name.removesuffix(suffix)
                for source in (extension.with_name(stem + ".py"), extension.with_name(stem + ".pxd")):
                    if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
                        pytest.exit(
                            f"{extension} is older than {source.name}: run `make build`", returncode=4
                        )


def _prefer_sources() -> None:
    sys.path_hooks.insert(
        0,
        FileFinder.path_hook(
            (SourceFileLoader, SOURCE_SUFFIXES),
            (SourcelessFileLoader, BYTECODE_SUFFIXES),
            (ExtensionFileLoader, EXTENSION_SUFFIXES),
        ),
    )
    sys.path_importer_cache.clear()


_refuse_stale_extensions()
if os.environ.get("FIELDLINE_PURE_PYTHON") == "1":
    _prefer_sources()

from tests.servicekit import Mosquitto, free_port  # noqa: E402  (after the import system is set)


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
