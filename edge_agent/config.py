"""The agent's configuration file (``agent.yaml``), validated into typed models.

Every section has defaults, so a minimal file names only the gateway id. ``load_config`` reports every problem
as ``file:line:column: path: message``. Environment variables override a few deployment-specific values
(``FIELDLINE_DATA_DIR`` for the default database location).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.mqtt_link import Endpoint
from edge_agent.pipeline.pipeline import PipelineConfig
from edge_agent.southbound_coap import CoapConfig
from fieldline.durations import Duration, Size
from fieldline.wire import ID_PATTERN
from fieldline.yamlconf import load_model


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


GatewayId = Annotated[str, Field(pattern=f"^{ID_PATTERN.pattern}$")]


class GatewayConfig(_Model):
    id: GatewayId
    name: str | None = None
    labels: dict[str, str] = {}


class TlsConfig(_Model):
    """TLS towards a broker: the CA that signed its certificate, and optionally our client certificate."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_hostname_check: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        return self

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca) if self.ca else None)
        ctx.check_hostname = self.server_hostname_check
        if self.cert and self.key:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


class BrokerConfig(_Model):
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    client_id: str | None = None
    keepalive: int = Field(30, ge=5, le=3600)
    protocol: Literal["5", "3.1.1"] = "5"

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: object) -> object:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://host:port or mqtts://host:port")
        return value

    def endpoint(self) -> Endpoint:
        parts = urlsplit(self.url)
        secure = parts.scheme == "mqtts"
        tls = (self.tls or TlsConfig()).context() if secure or self.tls else None
        return Endpoint(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if secure else 1883),
            tls=tls,
            username=self.username,
            password=self.password,
        )


class MqttSouthboundConfig(BrokerConfig):
    """The gateway's local broker, where devices publish."""

    enabled: bool = True
    qos: Literal[0, 1] = 1
    receive_maximum: int = Field(16384, ge=1, le=65535)
    session_expiry: Duration = 86400.0
    max_payload: Size = 65536


class SouthboundConfig(_Model):
    mqtt: MqttSouthboundConfig = MqttSouthboundConfig()
    coap: CoapConfig = CoapConfig(enabled=False)


class BackoffConfig(_Model):
    initial: Duration = 1.0
    max: Duration = 60.0


class UplinkConfig(BrokerConfig):
    """The cloud broker: batches go up at QoS 1 with a bounded in-flight window; commands come down on a persistent
    session that the broker keeps for ``session_expiry`` while the gateway is offline."""

    enabled: bool = True
    session_expiry: Duration = 86400.0
    inflight: int = Field(8, ge=1, le=1000)
    backoff: BackoffConfig = BackoffConfig()
    backfill_after: Duration = 10.0
    drain_on_shutdown: Duration = 3.0


class PkiConfig(_Model):
    """Certificate renewal against the cloud's PKI API (docs/enrollment.md). The key and certificate are the
    uplink's (``uplink.tls.key``/``cert``), which ``fieldline edge enroll`` writes; renewal runs when
    ``cloud_url`` is set and renews once less than ``renew_below`` of the certificate's validity remains."""

    cloud_url: str | None = Field(None, description="http(s)://host:port of the cloud core's API")
    ca: Path | None = Field(None, description="CA bundle that verifies an https cloud_url")
    key_kind: Literal["ec-p256", "rsa-3072"] = "ec-p256"
    renew_below: float = Field(1 / 3, gt=0, lt=1)
    warn_below: float = Field(1 / 6, gt=0, lt=1)
    check_interval: Duration = Field(3600.0, description="longest wait between two checks of the certificate")
    timeout: Duration = 30.0
    backoff: BackoffConfig = BackoffConfig(initial=5.0, max=300.0)

    @field_validator("cloud_url")
    @classmethod
    def _cloud_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("expected http://host:port or https://host:port")
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> PkiConfig:
        if self.warn_below > self.renew_below:
            raise ValueError("warn_below must not exceed renew_below")
        if self.check_interval <= 0:
            raise ValueError("check_interval must be longer than zero")
        return self


class StorageConfig(_Model):
    path: Path | None = None
    sync: Literal["full", "normal"] = "full"
    max_bytes: Size = 256 * 1024 * 1024
    batch_max_bytes: Size = 64 * 1024
    batch_max_age: Duration = 1.0
    commit_interval: Duration = 0.05
    max_pending_messages: int = Field(
        10_000,
        ge=100,
        description="device messages waiting for the next commit at most; beyond, the MQTT southbound stops "
        "reading until a commit takes them (bounds memory at QoS 0)",
    )
    quarantine_max_rows: int = Field(10_000, ge=1)
    quarantine_max_payload: Size = 4096

    @field_validator("commit_interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if not 0.001 <= value <= 10:
            raise ValueError("commit_interval must be between 1ms and 10s")
        return value


class DecodeConfig(_Model):
    max_future_skew: Duration = 300.0


class HttpConfig(_Model):
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = Field(9100, ge=0, le=65535)


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class DeviceConfig(_Model):
    type: str | None = None


class WebhookConfig(_Model):
    """The ``webhook`` notification channel: alerts POSTed as JSON to ``url``."""

    url: str
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host/path or https://host/path")
        return value


class NotifiersConfig(_Model):
    webhook: WebhookConfig | None = None


class AutomationConfig(_Model):
    """Local event rules and workflows (docs/edge-agent.md#automation).

    ``workflows`` and ``rules`` list files or directories (a directory contributes its own ``*.yaml`` workflow
    files, or ``*.rules.yaml`` rules files, not those of its subdirectories). With ``strict`` a file that fails
    to load stops the agent from starting; without it that file is disabled and reported.
    """

    workflows: list[Path] = []
    rules: list[Path] = []
    notifiers: NotifiersConfig = NotifiersConfig()
    command_ack_timeout: Duration = 30.0
    strict: bool = False
    queue_size: int = Field(10_000, ge=1, le=1_000_000)

    @field_validator("command_ack_timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("command_ack_timeout must be longer than zero")
        return value

    @property
    def configured(self) -> bool:
        """True when there is something to run."""
        return bool(self.workflows or self.rules)


class AgentConfig(_Model):
    gateway: GatewayConfig
    southbound: SouthboundConfig = SouthboundConfig()
    decode: DecodeConfig = DecodeConfig()
    devices: dict[str, DeviceConfig] = {}
    pipelines: list[PipelineConfig] = []
    uplink: UplinkConfig = UplinkConfig()
    storage: StorageConfig = StorageConfig()
    http: HttpConfig = HttpConfig()
    logging: LoggingConfig = LoggingConfig()
    automation: AutomationConfig = AutomationConfig()
    pki: PkiConfig = PkiConfig()

    @model_validator(mode="after")
    def _unique_pipelines(self) -> AgentConfig:
        names = [p.name for p in self.pipelines]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pipeline names must be unique: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _renewal_needs_a_certificate(self) -> AgentConfig:
        if self.pki.cloud_url is not None and (self.uplink.tls is None or self.uplink.tls.cert is None):
            raise ValueError("pki.cloud_url renews uplink.tls.cert: set uplink.tls.cert and uplink.tls.key")
        return self

    def database_path(self) -> Path:
        if self.storage.path is not None:
            return self.storage.path
        return Path(os.environ.get("FIELDLINE_DATA_DIR", ".fieldline")) / f"edge-{self.gateway.id}.db"

    def workflows_database_path(self) -> Path:
        """The workflow engine's file, beside the agent's (``edge-gw-1.db`` → ``edge-gw-1.workflows.db``)."""
        path = self.database_path()
        return path.with_name(f"{path.stem}.workflows.db")


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate ``agent.yaml``; raises ``fieldline.errors.ConfigError`` listing every issue."""
    return load_model(AgentConfig, path)
