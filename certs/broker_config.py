"""The Mosquitto 2 configuration of the cloud broker: mutual TLS where the client certificate's CN is the
username, and ACLs that keep every gateway on its own topics.

Two listeners (``per_listener_settings true``), both requiring a certificate from the CA and refusing revoked ones:

- the **gateway listener** (8883) also forces the MQTT client id to the CN (``use_username_as_clientid``): without
  it, any gateway could connect with another's client id, kick it off and take over its persistent session
  (queued downlink included). Its ACL (``acl``)::

      pattern write fl/%u/up/#          a gateway publishes only under its own id
      pattern read  fl/%u/down/#        and subscribes to (and receives) only its own downlink

- the **cloud listener** (8884; bind it to the cloud's private network) lets the cloud core use its own client
  ids (``<id>-ingest``, ``<id>-commands``, one per replica). Its ACL (``acl-cloud``) grants only the cloud core's
  certificate CN::

      user <cloud client>
      topic read  fl/+/up/#             every gateway's uplink, directly or through $share/<group>/fl/+/up/#
      topic write fl/+/down/#           every gateway's configuration and commands

Shared subscriptions need no line of their own: Mosquitto 2.0 accepts a SUBSCRIBE to ``$share/...`` and checks
each message it delivers through it against the subscriber's ``read`` rules on the real topic (verified with
2.0.11: a gateway's ``$share/g/fl/+/up/#`` receives nothing of other gateways, the cloud's receives everything).

Mosquitto denies anything no line grants: a gateway's publish on another gateway's topics is dropped, its
subscription to another gateway's downlink receives nothing. A gateway's local topics (``devices/...``) live on
its own local broker and never pass through this one.

Files written in the output directory: ``mosquitto.conf``, ``acl``, ``acl-cloud``, ``chain.pem`` (the
``cafile``), ``crl.pem``, ``broker.pem`` (server certificate then intermediate) and ``broker.key``,
``<cloud client>.pem``/``.key`` (the cloud core's MQTT client certificate). Existing certificates are kept while
they are current and from this CA."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509

from certs.authority import CertificateAuthority
from certs.crl import crl_bundle
from certs.errors import CertificateFileError
from certs.keys import load_certificates, write_atomic, write_pem, write_private_key

DEFAULT_CLOUD_CLIENT = "fieldline-cloud"
DEFAULT_SERVER_SANS: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ip_address("127.0.0.1")),
)


@dataclass(frozen=True)
class BrokerLayout:
    """Where ``write_broker_config`` put each file."""

    directory: Path
    cloud_client: str = DEFAULT_CLOUD_CLIENT

    @property
    def config(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def acl(self) -> Path:
        return self.directory / "acl"

    @property
    def cloud_acl(self) -> Path:
        return self.directory / "acl-cloud"

    @property
    def cafile(self) -> Path:
        return self.directory / "chain.pem"

    @property
    def crlfile(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def certfile(self) -> Path:
        return self.directory / "broker.pem"

    @property
    def keyfile(self) -> Path:
        return self.directory / "broker.key"

    @property
    def cloud_certfile(self) -> Path:
        return self.directory / f"{self.cloud_client}.pem"

    @property
    def cloud_keyfile(self) -> Path:
        return self.directory / f"{self.cloud_client}.key"


GATEWAY_ACL = (
    "# Fieldline gateway ACL (written by `fieldline certs broker-config`).\n"
    "# The username is the client certificate's CN (use_identity_as_username): the gateway's id.\n"
    "# A gateway publishes only its own uplink and reads only its own downlink.\n"
    "pattern write fl/%u/up/#\n"
    "pattern read fl/%u/down/#\n"
)


def cloud_acl_rules(cloud_client: str = DEFAULT_CLOUD_CLIENT) -> str:
    """The cloud listener's ACL: every uplink (also through shared subscriptions), every downlink."""
    return (
        "# Fieldline cloud-core ACL (written by `fieldline certs broker-config`).\n"
        f"user {cloud_client}\n"
        "topic read fl/+/up/#\n"
        "topic write fl/+/down/#\n"
    )


def mosquitto_config(
    layout: BrokerLayout,
    *,
    port: int = 8883,
    bind: str | None = None,
    cloud_port: int = 8884,
    cloud_bind: str | None = None,
) -> str:
    """The ``mosquitto.conf`` text for ``layout`` (absolute paths, so it runs from any directory)."""
    d = layout.directory.resolve()
    tls = (
        f"cafile {d / layout.cafile.name}\n"
        f"certfile {d / layout.certfile.name}\n"
        f"keyfile {d / layout.keyfile.name}\n"
        f"crlfile {d / layout.crlfile.name}\n"
        "tls_version tlsv1.2\n"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "allow_anonymous false\n"
    )
    return (
        "# Fieldline cloud broker (written by `fieldline certs broker-config`): mutual TLS, identity = certificate CN.\n"
        "# After replacing crl.pem send SIGHUP: Mosquitto 2.0 re-reads it for new connections; sessions already\n"
        "# open last until they end or the broker restarts (docs/security.md). `fieldline certs crl-sync` does it.\n"
        "per_listener_settings true\n"
        "\n"
        "# Gateways: the client id is forced to the certificate's CN, so no gateway can take over another's session.\n"
        f"listener {port}{f' {bind}' if bind else ''}\n"
        f"{tls}"
        "use_username_as_clientid true\n"
        f"acl_file {d / layout.acl.name}\n"
        "\n"
        "# The cloud core (keep this port on the cloud's private network).\n"
        f"listener {cloud_port}{f' {cloud_bind}' if cloud_bind else ''}\n"
        f"{tls}"
        f"acl_file {d / layout.cloud_acl.name}\n"
    )


def write_broker_config(
    ca: CertificateAuthority,
    out: Path,
    *,
    crls: Sequence[x509.CertificateRevocationList],
    port: int = 8883,
    bind: str | None = None,
    cloud_port: int = 8884,
    cloud_bind: str | None = None,
    server_name: str = "broker",
    server_sans: Sequence[x509.GeneralName] = DEFAULT_SERVER_SANS,
    cloud_client: str = DEFAULT_CLOUD_CLIENT,
    now: datetime | None = None,
) -> BrokerLayout:
    """Write the broker's configuration, ACLs, chain and CRLs (one per issuing intermediate) into ``out``; issue
    the broker's server certificate and the cloud core's client certificate unless current ones from this CA are
    already there."""
    layout = BrokerLayout(out, cloud_client)
    now = now or datetime.now(UTC)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.cafile, ca.chain_pem(), 0o644)
    write_atomic(layout.crlfile, crl_bundle(crls), 0o644)
    if not _usable(layout.certfile, layout.keyfile, ca, now):
        cert, key = ca.issue_server(server_name, server_sans, now=now)
        write_private_key(layout.keyfile, key)
        write_pem(layout.certfile, cert, ca.certificate)
    if not _usable(layout.cloud_certfile, layout.cloud_keyfile, ca, now):
        cert, key = ca.issue_client(cloud_client, validity=ca.certificate.not_valid_after_utc - now, now=now)
        write_private_key(layout.cloud_keyfile, key)
        write_pem(layout.cloud_certfile, cert)
    write_atomic(layout.acl, GATEWAY_ACL.encode(), 0o644)
    write_atomic(layout.cloud_acl, cloud_acl_rules(cloud_client).encode(), 0o644)
    config = mosquitto_config(layout, port=port, bind=bind, cloud_port=cloud_port, cloud_bind=cloud_bind)
    write_atomic(layout.config, config.encode(), 0o644)
    return layout


def _usable(cert_file: Path, key_file: Path, ca: CertificateAuthority, now: datetime) -> bool:
    """An existing certificate is kept when its key is beside it, the intermediate issued it and it is current."""
    if not (cert_file.exists() and key_file.exists()):
        return False
    try:
        cert = load_certificates(cert_file)[0]
    except CertificateFileError:
        return False
    return (
        cert.issuer == ca.certificate.subject and cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    )
