"""certs.tls contexts on both ends of a real TLS connection (asyncio streams on 127.0.0.1)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from certs import CertificateAuthority, CertificateFileError, RevokedCertificate, load_certificates
from certs.crl import crl_bytes
from certs.keys import write_pem, write_private_key
from certs.tls import client_context, server_context
from tests.tlskit import ClientFiles, make_ca, write_client


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def server(tmp_path: Path, ca: CertificateAuthority) -> Iterator[tuple[int, Path]]:
    """A TLS server requiring client certificates and checking ``crl.pem``; answers ``hello``. Blocking sockets
    in a thread: OpenSSL writes its alert before the server gives up on a handshake (asyncio's server side
    aborts the connection instead, so the client would only see a reset)."""
    cert, key = ca.issue_server("api", [x509.DNSName("localhost")])
    write_pem(tmp_path / "api.pem", cert, ca.certificate)
    write_private_key(tmp_path / "api.key", key)
    (tmp_path / "chain.pem").write_bytes(ca.chain_pem())
    crl_file = tmp_path / "crl.pem"
    revoked = write_client(ca, tmp_path / "clients", "revoked")
    serial = load_certificates(revoked.cert_file)[0].serial_number
    crl_file.write_bytes(crl_bytes(ca.build_crl([RevokedCertificate(serial, datetime.now(UTC))])))
    context = server_context(
        ca_file=tmp_path / "chain.pem",
        cert_file=tmp_path / "api.pem",
        key_file=tmp_path / "api.key",
        require_client_cert=True,
        crl_file=crl_file,
    )
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with raw:
                try:
                    with context.wrap_socket(raw, server_side=True) as tls:
                        tls.sendall(b"hello")
                except (ssl.SSLError, OSError):
                    continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], tmp_path
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone does not)
        listener.close()
        thread.join(5)


def _talk(port: int, context: ssl.SSLContext, hostname: str = "localhost") -> bytes:
    # TLS 1.2: the server judges the client certificate inside the handshake, so refusals surface here.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        return tls.recv(5)


def test_a_client_certificate_from_the_ca_is_accepted(
    server: tuple[int, Path], ca: CertificateAuthority
) -> None:
    port, directory = server
    files = write_client(ca, directory / "clients", "gw-1")
    assert _talk(port, files.context()) == b"hello"


def test_revoked_missing_and_foreign_client_certificates_are_refused(
    server: tuple[int, Path], ca: CertificateAuthority
) -> None:
    port, directory = server
    revoked = ClientFiles(
        directory / "clients/revoked.pem", directory / "clients/revoked.key", directory / "chain.pem"
    )
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REVOKED"):
        _talk(port, revoked.context())
    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE"):
        _talk(port, client_context(ca_file=directory / "chain.pem"))
    stranger = write_client(make_ca(directory / "other"), directory / "clients", "gw-1", trust=ca)
    with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):
        _talk(port, stranger.context())


def test_the_client_checks_the_servers_name_and_issuer(
    server: tuple[int, Path], ca: CertificateAuthority
) -> None:
    port, directory = server
    files = write_client(ca, directory / "clients", "gw-1")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _talk(port, files.context(), hostname="elsewhere.example.com")
    other = make_ca(directory / "other")
    (directory / "other-chain.pem").write_bytes(other.chain_pem())
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _talk(port, client_context(ca_file=directory / "other-chain.pem"))


def test_bad_files_raise_certificate_file_errors(tmp_path: Path, ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateFileError, match="no such file"):
        client_context(ca_file=tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(CertificateFileError, match="not a PEM certificate"):
        client_context(ca_file=tmp_path / "junk.pem")
    files = write_client(ca, tmp_path, "gw-1")
    other = write_client(ca, tmp_path, "gw-2")
    with pytest.raises(CertificateFileError, match="cannot be loaded together"):
        client_context(ca_file=files.ca_file, cert_file=files.cert_file, key_file=other.key_file)
