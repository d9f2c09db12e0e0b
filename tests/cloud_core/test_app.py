"""The service shell: health, readiness, metrics, problem details, authentication and settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_core.settings import load_settings
from fieldline.errors import ConfigError
from tests.cloud_core.cloudkit import running_cloud


async def test_health_readiness_metrics_and_problem_details(tmp_path: Path) -> None:
    async with running_cloud(tmp_path) as cloud, cloud.client(None) as anonymous:
        assert (await anonymous.get("/healthz")).json()["status"] == "ok"
        ready = await anonymous.get("/readyz")
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        assert checks["database"] == "ok"
        assert set(checks.values()) == {"ok"}
        missing = await anonymous.get("/no/such/route")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json() == {
            "type": "about:blank",
            "title": "Not found",
            "status": 404,
            "instance": "/no/such/route",
        }
        metrics = (await anonymous.get("/metrics")).text
        assert (
            'fieldline_cloud_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in metrics
        )
        assert (await anonymous.get("/docs")).status_code == 200
        assert (await anonymous.get("/openapi.json")).json()["info"]["title"] == "Fieldline cloud core"


def test_settings_from_yaml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_text("api:\n  port: 9000\ndatabase:\n  url: sqlite+aiosqlite:///x.db\n")
    settings = load_settings(
        path, environ={"FIELDLINE_CLOUD__API__PORT": "9100", "FIELDLINE_CLOUD__BROKER__HOST": "mq"}
    )
    assert settings.api.port == 9100
    assert settings.broker.host == "mq"
    assert settings.database_url == "sqlite+aiosqlite:///x.db"


def test_settings_errors_are_positioned(tmp_path: Path) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_text("api:\n  port: many\n  colour: blue\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    lines = [str(i) for i in caught.value.issues]
    assert lines[0].startswith(f"{path}:2:9: api.port:")
    assert lines[1].startswith(f"{path}:3:")


def test_production_refuses_the_placeholder_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(None, environ={"FIELDLINE_CLOUD__ENVIRONMENT": "production"})


def test_the_example_configuration_loads() -> None:
    settings = load_settings(Path(__file__).parents[2] / "examples" / "cloud.yaml", environ={})
    assert settings.broker.shared_group == "fieldline-ingest"
    assert settings.timeseries.retention.raw == 7 * 86400
