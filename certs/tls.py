"""``ssl.SSLContext`` factories for Fieldline's TLS users: paho-mqtt (``client.tls_set_context``), aiomqtt
(``tls_context=``), httpx (``verify=``) and servers (uvicorn, test brokers).

Both sides verify the peer against ``ca_file`` (the chain: intermediate then root), TLS 1.2 at least. The client
checks the server's name against its SANs; a server given ``crl_file`` refuses revoked client certificates (the
CRL of the issuing intermediate, checked for the leaf)."""

from __future__ import annotations

import ssl
from pathlib import Path

from certs.errors import CertificateFileError


def client_context(
    *, ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client context trusting ``ca_file``; with ``cert_file``/``key_file`` it presents that client certificate
    (``cert_file`` may hold the chain, leaf first)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_verify(context, ca_file)
    if cert_file is not None:
        _load_chain(context, cert_file, key_file)
    elif key_file is not None:
        raise ValueError("key_file is given without cert_file")
    return context


def server_context(
    *,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    require_client_cert: bool,
    crl_file: Path | None = None,
) -> ssl.SSLContext:
    """A server context presenting ``cert_file``; it asks for a client certificate verified against ``ca_file``
    (required when ``require_client_cert``, optional otherwise) and, with ``crl_file``, refuses revoked ones."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert_file, key_file)
    _load_verify(context, ca_file)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if crl_file is not None:
        _load_verify(context, crl_file)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def _load_verify(context: ssl.SSLContext, path: Path) -> None:
    try:
        context.load_verify_locations(cafile=str(path))
    except FileNotFoundError:
        raise CertificateFileError("no such file", path=path) from None
    except ssl.SSLError as exc:
        raise CertificateFileError(f"not a PEM certificate or CRL file ({exc.reason})", path=path) from exc


def _load_chain(context: ssl.SSLContext, cert_file: Path, key_file: Path | None) -> None:
    try:
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file) if key_file else None)
    except FileNotFoundError as exc:
        raise CertificateFileError("no such file", path=Path(exc.filename or cert_file)) from None
    except ssl.SSLError as exc:
        raise CertificateFileError(
            f"certificate and key cannot be loaded together ({exc.reason})", path=cert_file
        ) from exc
