"""Cloud core settings: embedded defaults, a YAML file, then environment overrides.

With no file the service runs on one machine with no external services: SQLite files under
``FIELDLINE_DATA_DIR`` (default ``./.fieldline``), the embedded time-series store, no broker (ingest off until a
broker is configured). Any field can be overridden from the environment as ``FIELDLINE_CLOUD__<SECTION>__<KEY>``
(``FIELDLINE_CLOUD__DATABASE__URL=postgresql+asyncpg://...``); values are parsed as YAML scalars. Secrets that
still hold a placeholder are refused outside development.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldline.durations import Duration
from fieldline.errors import ConfigError, ConfigIssue
from fieldline.yamlconf import read_yaml, validate_data

ENV_PREFIX = "FIELDLINE_CLOUD__"
PLACEHOLDER_SECRET = "change-me"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    cors_origins: list[str] = []
    shutdown_grace: Duration = 10.0


class DatabaseSettings(_Model):
    url: str | None = Field(
        None, description="SQLAlchemy async URL; default sqlite+aiosqlite:///<data_dir>/registry.db"
    )
    echo: bool = False
    pool_size: int = Field(10, ge=1)


class BrokerSettings(_Model):
    """The cloud MQTT broker the gateways publish to; ingest is off when ``host`` is empty."""

    host: str | None = None
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = "fieldline-cloud"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    shared_group: str = Field(
        "fieldline-ingest", description="shared subscription group ($share/<group>/...)"
    )
    keepalive: int = Field(30, ge=5)
    session_expiry: Duration = Field(
        7 * 86400.0,
        description="how long the broker keeps the ingest's session, and queues its share of the uplink, while "
        "the cloud core is away (0: the session ends with the connection)",
    )


class IngestSettings(_Model):
    unknown_devices: Literal["register", "quarantine"] = "register"
    batch_points: int = Field(
        20_000,
        ge=1,
        description="points (uplink records: one device at one instant) a flush takes from the queue and writes "
        "in one transaction, at most",
    )
    queue_size: int = Field(1000, ge=1, description="uplink batches waiting to be written")


class RetentionSettings(_Model):
    raw: Duration = 7 * 86400.0
    rollup_1m: Duration = 90 * 86400.0
    rollup_1h: Duration = 5 * 365 * 86400.0


class TimeSeriesSettings(_Model):
    backend: Literal["sqlite", "victoriametrics"] = "sqlite"
    path: Path | None = Field(None, description="SQLite file; default <data_dir>/timeseries.db")
    url: str = Field("http://127.0.0.1:8428", description="VictoriaMetrics base URL")
    retention: RetentionSettings = RetentionSettings()
    influxdb: InfluxSettings | None = None


class InfluxSettings(_Model):
    """An extra InfluxDB 2 write target (same line protocol)."""

    url: str
    token: str
    org: str
    bucket: str


class AuthSettings(_Model):
    jwt_secret: str = PLACEHOLDER_SECRET
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: list[str] = ["HS256"]
    role_claim: str = "role"
    anonymous_role: Literal["none", "viewer"] = Field(
        "none", description="role granted without credentials (none: every request must authenticate)"
    )


class CommandSettings(_Model):
    default_expiry: Duration = 300.0


class AuditSettings(_Model):
    retention: Duration = Field(
        365 * 86400.0,
        description="how long audit entries are kept (0: forever); older ones are deleted hourly",
    )
    prune_interval: Duration = Field(
        3600.0, gt=0, description="how often entries past the retention are deleted"
    )


class PkiSettings(_Model):
    """The issuing CA and what it signs (docs/enrollment.md). Without ``ca_dir`` the CA lives in
    ``<data_dir>/pki`` and is created there on first start (no root passphrase); a production deployment points
    ``ca_dir`` at an intermediate made with ``fieldline certs init``."""

    enabled: bool = True
    ca_dir: Path | None = Field(None, description="directory of the issuing CA; default <data_dir>/pki")
    certificate_validity: Duration = Field(90 * 86400.0, description="validity of the certificates issued")
    token_ttl: Duration = Field(86400.0, description="default lifetime of an enrollment token")
    max_token_ttl: Duration = Field(30 * 86400.0, description="the longest lifetime a token may be given")
    crl_next_update: Duration = Field(86400.0, description="how long a published CRL stays current")
    public_rate: float = Field(
        30.0, gt=0, description="requests a minute one client address may make to /pki/enroll and /pki/renew"
    )
    public_burst: int = Field(10, ge=1, description="requests one client address may make at once to those")

    @model_validator(mode="after")
    def _durations(self) -> PkiSettings:
        if self.certificate_validity < 10:
            raise ValueError("certificate_validity must be at least 10s")
        if not 0 < self.token_ttl <= self.max_token_ttl:
            raise ValueError("token_ttl must be longer than zero and at most max_token_ttl")
        if self.crl_next_update < 60:
            raise ValueError("crl_next_update must be at least 60s")
        return self


class CloudSettings(_Model):
    environment: Literal["development", "production"] = "development"
    data_dir: Path = Field(default_factory=lambda: Path(os.environ.get("FIELDLINE_DATA_DIR", ".fieldline")))
    api: ApiSettings = ApiSettings()
    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    ingest: IngestSettings = IngestSettings()
    timeseries: TimeSeriesSettings = TimeSeriesSettings()
    auth: AuthSettings = AuthSettings()
    commands: CommandSettings = CommandSettings()
    audit: AuditSettings = AuditSettings()
    pki: PkiSettings = PkiSettings()
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _secrets(self) -> CloudSettings:
        if self.environment == "production" and self.auth.jwt_secret == PLACEHOLDER_SECRET:
            raise ValueError("auth.jwt_secret still holds the placeholder: set a real secret in production")
        return self

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.data_dir / 'registry.db'}"

    @property
    def timeseries_path(self) -> Path:
        return self.timeseries.path or self.data_dir / "timeseries.db"

    @property
    def pki_dir(self) -> Path:
        return self.pki.ca_dir or self.data_dir / "pki"


TimeSeriesSettings.model_rebuild()


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            node[path[-1]] = raw
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> CloudSettings:
    """Settings from ``path`` (optional) with environment overrides; raises ``ConfigError`` with every issue."""
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    positions: dict[Any, tuple[int, int]] = {}
    filename = str(path) if path is not None else "<defaults>"
    if path is not None:
        raw, positions = read_yaml(path)
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError([ConfigIssue(filename, 1, 1, "", "expected a mapping at the top level")])
        data = raw or {}
    data = _merge(data, _env_overrides(environ))
    return validate_data(CloudSettings, data, filename, positions)
