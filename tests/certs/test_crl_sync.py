"""crl-sync against a small HTTP server publishing a CRL and a real Mosquitto: after a revocation, the next
round installs the CRL, signals the broker, and the revoked gateway can no longer connect."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certs import CertificateAuthority, RevokedCertificate, create_authority, load_certificates
from certs import crl_sync as crl_sync_module
from certs.cli import app
from certs.crl import crl_bytes, crl_number, load_crl, revoked_serials
from certs.crl_sync import SyncOutcome, command_reload, install_crl, sync_once
from certs.errors import CrlError
from tests.tlskit import TlsMosquitto, make_ca, mqtt_client, refusal, tls_mosquitto, write_client


@dataclass
class CrlServer:
    """Serves ``body`` at ``/api/v1/pki/crl`` like the cloud does; ``script`` answers (status, body) are served
    first, one per request."""

    body: bytes = b""
    status: int = 200
    url: str = ""
    script: list[tuple[int, bytes]] = field(default_factory=list)


@pytest.fixture
def crl_server() -> Iterator[CrlServer]:
    state = CrlServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/api/v1/pki/crl":
                self.send_error(404)
                return
            status, body = state.script.pop(0) if state.script else (state.status, state.body)
            self.send_response(status)
            self.send_header("Content-Type", "application/x-pem-file")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/pki/crl"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def broker(tmp_path: Path, ca: CertificateAuthority) -> Iterator[TlsMosquitto]:
    yield from tls_mosquitto(tmp_path / "broker", ca)


def _pid_file(broker: TlsMosquitto) -> Path:
    assert broker.process is not None
    path = broker.workdir / "mosquitto.pid"
    path.write_text(f"{broker.process.pid}\n")
    return path


def test_a_revoked_gateway_is_refused_after_the_sync(
    tmp_path: Path, ca: CertificateAuthority, broker: TlsMosquitto, crl_server: CrlServer
) -> None:
    a = write_client(ca, tmp_path / "clients", "gw-a")
    b = write_client(ca, tmp_path / "clients", "gw-b")
    c = write_client(ca, tmp_path / "clients", "gw-c")
    assert refusal(broker, a, "gw-a") is None
    serial_a = load_certificates(a.cert_file)[0].serial_number
    crl_server.body = crl_bytes(ca.build_crl([RevokedCertificate(serial_a, datetime.now(UTC))]))
    result = CliRunner().invoke(
        app,
        ["crl-sync", "--url", crl_server.url, "--ca-file", str(broker.layout.cafile), "--out",
         str(broker.layout.crlfile), "--reload-pid", str(_pid_file(broker)), "--once"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "installed CRL" in result.output
    broker.wait_for_reloads(1)
    assert revoked_serials(load_crl(broker.layout.crlfile)) == {serial_a}
    assert refusal(broker, a, "gw-a") == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    assert refusal(broker, b, "gw-b") is None
    # A second revocation after a second SIGHUP: the newest CRL wins in the broker's store.
    serial_b = load_certificates(b.cert_file)[0].serial_number
    now = datetime.now(UTC)
    crl_server.body = crl_bytes(
        ca.build_crl([RevokedCertificate(serial_a, now), RevokedCertificate(serial_b, now)], now=now)
    )
    outcome = sync_once(
        crl_server.url, ca_file=broker.layout.cafile, out=broker.layout.crlfile, reload=broker.reload
    )
    assert outcome.installed
    assert refusal(broker, b, "gw-b") == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    assert refusal(broker, a, "gw-a") == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    assert refusal(broker, c, "gw-c") is None


def test_only_newer_crls_from_our_ca_are_installed(
    tmp_path: Path, ca: CertificateAuthority, crl_server: CrlServer
) -> None:
    out, chain_file = tmp_path / "crl.pem", tmp_path / "chain.pem"
    chain_file.write_bytes(ca.chain_pem())
    reloads: list[str] = []
    now = datetime.now(UTC)
    crl_server.body = crl_bytes(ca.build_crl([], now=now), der=True)
    first = sync_once(crl_server.url, ca_file=chain_file, out=out, reload=lambda: reloads.append("hup"))
    assert first.installed
    assert first.previous is None
    assert out.read_bytes().startswith(b"-----BEGIN X509 CRL-----")  # DER served, PEM installed

    crl_server.body = crl_bytes(ca.build_crl([], now=now - timedelta(hours=1)))
    older = sync_once(crl_server.url, ca_file=chain_file, out=out, reload=lambda: reloads.append("hup"))
    assert not older.installed
    assert "not newer" in older.detail

    crl_server.body = crl_bytes(ca.build_crl([], now=now + timedelta(minutes=5)))
    same = sync_once(crl_server.url, ca_file=chain_file, out=out, reload=lambda: reloads.append("hup"))
    assert not same.installed
    assert same.detail == "same revocations and the installed CRL is still fresh"

    refreshed = sync_once(
        crl_server.url, ca_file=chain_file, out=out, reload=lambda: reloads.append("hup"),
        now=now + timedelta(hours=13),
    )  # fmt: skip
    assert refreshed.installed  # past half of the installed CRL's day: refresh it before it expires
    assert reloads == ["hup", "hup"]
    installed = crl_number(load_crl(out))

    other = create_authority(tmp_path / "other")
    crl_server.body = crl_bytes(other.build_crl([], now=now + timedelta(hours=2)))
    with pytest.raises(CrlError, match="signature does not verify against the CA chain"):
        sync_once(crl_server.url, ca_file=chain_file, out=out, reload=None)
    crl_server.body = crl_bytes(ca.build_crl([], now=now - timedelta(days=2), number=installed + 1))
    with pytest.raises(CrlError, match="expired"):
        sync_once(crl_server.url, ca_file=chain_file, out=out, reload=None)
    crl_server.status, crl_server.body = 503, b"busy"
    with pytest.raises(CrlError, match="HTTP 503") as caught:
        sync_once(crl_server.url, ca_file=chain_file, out=out, reload=None)
    assert caught.value.retryable
    assert crl_number(load_crl(out)) == installed


def test_reload_by_command_and_its_failure(tmp_path: Path, ca: CertificateAuthority) -> None:
    marker = tmp_path / "reloaded"
    command_reload(f"touch {marker}")()
    assert marker.exists()
    with pytest.raises(CrlError, match="reload command exited 1"):
        command_reload("false")()
    out = tmp_path / "crl.pem"
    outcome = install_crl(
        crl_bytes(ca.build_crl([])), chain=ca.chain, out=out, now=datetime.now(UTC), source="test"
    )
    assert outcome.installed


def test_cli_errors_are_one_line(tmp_path: Path, ca: CertificateAuthority, crl_server: CrlServer) -> None:
    (tmp_path / "chain.pem").write_bytes(ca.chain_pem())
    crl_server.status = 404
    result = CliRunner().invoke(
        app,
        ["crl-sync", "--url", crl_server.url, "--ca-file", str(tmp_path / "chain.pem"), "--out",
         str(tmp_path / "crl.pem"), "--once"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.startswith("Error: http://127.0.0.1:")
    assert "HTTP 404" in result.output
    assert len(result.output.strip().splitlines()) == 1


async def test_sighup_keeps_open_sessions_and_a_restart_cuts_them(
    tmp_path: Path, ca: CertificateAuthority, broker: TlsMosquitto
) -> None:
    """What the reload choice means (docs/security.md): SIGHUP refuses the revoked gateway's next connection but
    leaves its open session alone; only a restart ends that session."""
    a = write_client(ca, tmp_path / "clients", "gw-a")
    serial = load_certificates(a.cert_file)[0].serial_number
    async with mqtt_client(broker, a, "gw-a") as gateway:
        install_crl(
            crl_bytes(ca.build_crl([RevokedCertificate(serial, datetime.now(UTC))])),
            chain=ca.chain, out=broker.layout.crlfile, now=datetime.now(UTC), source="test",
        )  # fmt: skip
        broker.reload()
        assert refusal(broker, a, "gw-a-probe") == "SSLV3_ALERT_CERTIFICATE_REVOKED"
        await gateway.publish("fl/gw-a/up/status", b"still here", qos=1)  # PUBACK: the session is alive
    broker.restart()
    assert refusal(broker, a, "gw-a") == "SSLV3_ALERT_CERTIFICATE_REVOKED"


def test_the_loop_keeps_going_after_a_failed_round_and_stops_on_request(
    tmp_path: Path, ca: CertificateAuthority, crl_server: CrlServer
) -> None:
    (tmp_path / "chain.pem").write_bytes(ca.chain_pem())
    # The first round fails (HTTP 500); the second installs the CRL and the callback stops the loop.
    crl_server.script = [(500, b"down")]
    crl_server.body = crl_bytes(ca.build_crl([]))
    stop = threading.Event()
    outcomes: list[bool] = []

    def on_outcome(outcome: SyncOutcome) -> None:
        outcomes.append(outcome.installed)
        stop.set()

    crl_sync_module.run(
        crl_server.url, ca_file=tmp_path / "chain.pem", out=tmp_path / "crl.pem", reload=None,
        interval=0.01, stop=stop, on_outcome=on_outcome,
    )  # fmt: skip
    assert crl_server.script == []  # the failed round happened
    assert outcomes == [True]
    assert (tmp_path / "crl.pem").exists()
