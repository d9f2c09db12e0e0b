"""Shared PKI test kit (used by tests/certs and the enrollment tests): a CA in a temporary directory, client and
server certificates written to files, and a real Mosquitto running the configuration `fieldline certs
broker-config` writes (mutual TLS, CN as username, the pattern ACL, the CRL).

API:

- ``make_ca(directory, **kw) -> CertificateAuthority``: ``certs.create_authority`` in ``directory``.
- ``write_client(ca, directory, name, *, now=None, validity=...) -> ClientFiles``: a client key and certificate
  ``CN=name`` written to ``directory/name.pem``/``.key``; ``ClientFiles.context()`` is an ``ssl.SSLContext`` for
  paho (``tls_set_context``) or aiomqtt (``tls_context=``) trusting the CA's chain.
- ``TlsMosquitto(port, workdir, ca=..., revoked=...)``: a ``servicekit.Mosquitto`` whose configuration is the
  product's (``certs.broker_config.write_broker_config`` into ``workdir/broker``: gateways on ``port``, the cloud
  core on ``cloud_port``) plus test lines (log file,
  ``user root``). ``layout`` names its files, ``cloud_files()`` its cloud-core client certificate, ``reload()``
  sends SIGHUP and waits until the broker has reloaded, ``restart()`` stops and starts it on the same port.
- ``tls_mosquitto(directory, ca, revoked=()) -> Iterator[TlsMosquitto]``: start one, stop it afterwards (use it
  with ``yield from`` in a fixture).
- ``mqtt_client(broker, files, identifier) -> aiomqtt.Client``: an unconnected client of the gateway listener for
  ``async with`` (the broker forces its client id to the certificate's CN); ``cloud_client(broker, identifier)``
  one of the cloud listener (``broker.cloud_port``) with the cloud core's certificate;
  ``refusal(broker, files)`` is None when the broker lets that certificate connect, otherwise why it did not
  (the TLS alert: ``SSLV3_ALERT_CERTIFICATE_REVOKED``, ``..._EXPIRED``, ``TLSV1_ALERT_UNKNOWN_CA``).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import aiomqtt

from certs import CertificateAuthority, RevokedCertificate, create_authority, write_pem, write_private_key
from certs.broker_config import BrokerLayout, mosquitto_config, write_broker_config
from certs.tls import client_context
from tests.servicekit import Mosquitto, free_port, require_binary, wait_for_port


def make_ca(directory: Path, **kwargs: object) -> CertificateAuthority:
    return create_authority(directory, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ClientFiles:
    """A client certificate and key on disk, and the chain that verifies the broker."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def context(self) -> ssl.SSLContext:
        return client_context(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file)


def write_client(
    ca: CertificateAuthority,
    directory: Path,
    name: str,
    *,
    now: datetime | None = None,
    validity: timedelta = timedelta(days=90),
    trust: CertificateAuthority | None = None,
) -> ClientFiles:
    """Issue ``CN=name`` from ``ca`` into ``directory``; ``trust`` (default ``ca``) is the CA whose chain is used to
    verify the broker (a client of another CA still needs to trust the real broker to be refused by it)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = ca.issue_client(name, now=now, validity=validity)
    files = ClientFiles(directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}-ca.pem")
    write_pem(files.cert_file, cert)
    write_private_key(files.key_file, key)
    files.ca_file.write_bytes((trust or ca).chain_pem())
    return files


@dataclass
class TlsMosquitto(Mosquitto):
    """A Mosquitto running the product's broker configuration on a free port of 127.0.0.1."""

    ca: CertificateAuthority | None = None
    revoked: Iterable[RevokedCertificate] = ()
    cloud_port: int = field(default_factory=free_port)
    layout: BrokerLayout = field(init=False)

    def __post_init__(self) -> None:
        assert self.ca is not None
        self.layout = write_broker_config(
            self.ca,
            self.workdir / "broker",
            crls=[self.ca.build_crl(list(self.revoked))],
            port=self.port,
            cloud_port=self.cloud_port,
        )

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def cloud_files(self) -> ClientFiles:
        return ClientFiles(self.layout.cloud_certfile, self.layout.cloud_keyfile, self.layout.cafile)

    def start(self) -> None:
        binary = require_binary("mosquitto")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            mosquitto_config(
                self.layout,
                port=self.port,
                bind="127.0.0.1",
                cloud_port=self.cloud_port,
                cloud_bind="127.0.0.1",
            )
            + "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            + f"log_dest file {self.workdir}/mosquitto.log\n"
            + ("user root\n" if os.geteuid() == 0 else "")
            + self.extra_config
        )
        self.process = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.process.kill()
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            raise RuntimeError(f"mosquitto did not start: {err}") from None

    def reload(self) -> None:
        """SIGHUP, then wait until the broker has reloaded (see ``wait_for_reloads``)."""
        assert self.process is not None
        done = self.reloads()
        self.process.send_signal(signal.SIGHUP)
        self.wait_for_reloads(done + 1)

    def reloads(self) -> int:
        """How many reloads the broker has logged."""
        return self.log().count("Reloading config.")

    def wait_for_reloads(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` reloads are logged: the broker logs the line, then reloads in the same turn of its
        single-threaded loop, so the next connection it accepts meets the reloaded configuration and CRL."""
        deadline = time.monotonic() + timeout
        while self.reloads() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"mosquitto logged {self.reloads()} reloads, not {count}, within {timeout}s"
                )
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text() if path.exists() else ""


def tls_mosquitto(
    directory: Path, ca: CertificateAuthority, revoked: Iterable[RevokedCertificate] = ()
) -> Iterator[TlsMosquitto]:
    directory.mkdir(parents=True, exist_ok=True)
    broker = TlsMosquitto(port=free_port(), workdir=directory, ca=ca, revoked=revoked)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def mqtt_client(
    broker: TlsMosquitto, files: ClientFiles, identifier: str, **kwargs: object
) -> aiomqtt.Client:
    """A client of the gateway listener (``broker.port``); MQTT 5, 5 s timeouts."""
    return _client(broker.port, files, identifier, **kwargs)


def cloud_client(broker: TlsMosquitto, identifier: str, **kwargs: object) -> aiomqtt.Client:
    """A client of the cloud listener (``broker.cloud_port``) with the cloud core's certificate."""
    return _client(broker.cloud_port, broker.cloud_files(), identifier, **kwargs)


def _client(port: int, files: ClientFiles, identifier: str, **kwargs: object) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=identifier,
        tls_context=files.context(),
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )


def refusal(broker: TlsMosquitto, files: ClientFiles, identifier: str = "probe") -> str | None:
    """Connect with this certificate (TLS handshake, then an MQTT 3.1.1 CONNECT) and say how the broker answered:
    None when it sent a successful CONNACK, otherwise the reason: the TLS alert it sent, ``connack <code>``, or
    ``closed``. The probe speaks TLS 1.2, where the broker judges the client certificate inside the handshake:
    with TLS 1.3 it does so after the client's handshake has completed, and the alert races the client's first
    write (a reset can discard it), so the reason would be lost. Blocking; the 10 s socket timeout only bounds a
    hung broker."""
    name = identifier.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(name).to_bytes(2, "big") + name
    connect = b"\x10" + bytes([len(body)]) + body
    context = files.context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with (
            socket.create_connection(("127.0.0.1", broker.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(connect)
            answer = tls.recv(4)
    except ssl.SSLError as exc:
        return exc.reason or str(exc)
    except ConnectionError:
        return "closed"
    if len(answer) < 4 or answer[0] != 0x20:
        return "closed"
    return None if answer[3] == 0 else f"connack {answer[3]}"
