"""The agent configuration: the shipped example validates, and errors name file, line, column and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, load_config
from fieldline.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent.yaml"


def test_example_configuration_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.gateway.id == "gw-boiler-room-1"
    assert [p.name for p in config.pipelines] == ["boilers"]
    assert config.southbound.coap.observe[0].device_id == "boiler-7"
    assert config.storage.max_bytes == 256 * 1024 * 1024
    assert config.storage.commit_interval == pytest.approx(0.05)


def test_minimal_configuration_has_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("gateway: {id: gw-1}\n")
    monkeypatch.setenv("FIELDLINE_DATA_DIR", str(tmp_path / "data"))
    config = load_config(path)
    assert config.southbound.mqtt.url == "mqtt://127.0.0.1:1883"
    assert config.uplink.inflight == 8
    assert config.database_path() == tmp_path / "data" / "edge-gw-1.db"


def test_every_error_is_reported_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "gateway:\n"
        "  id: 'bad id'\n"
        "southbound:\n"
        "  mqtt:\n"
        "    qos: 2\n"
        "storage:\n"
        "  max_bytes: lots\n"
        "  commit_interval: 1h\n"
        "uplink:\n"
        "  url: http://cloud\n"
        "  tls: {cert: a.pem}\n"
        "pipelines:\n"
        "  - name: p\n"
        "    steps:\n"
        "      - type: nope\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    expected = [
        ("2:7", "gateway.id"),
        ("5:10", "southbound.mqtt.qos"),
        ("7:14", "storage.max_bytes"),
        ("8:20", "storage.commit_interval"),
        ("10:8", "uplink.url"),
        ("11:8", "uplink.tls"),
        ("15:9", "pipelines.0.steps.0"),
    ]
    assert len(lines) == len(expected), lines
    for (position, field), line in zip(expected, lines, strict=True):
        assert line.startswith(f"{path}:{position}: {field}:"), line


def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("gateway:\n  id: gw-1\n pipelines: [\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml:3:\d+: invalid YAML"):
        load_config(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_duplicate_pipeline_names_are_refused() -> None:
    with pytest.raises(ValueError, match="pipeline names must be unique: p"):
        AgentConfig.model_validate({"gateway": {"id": "g"}, "pipelines": [{"name": "p"}, {"name": "p"}]})
