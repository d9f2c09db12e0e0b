"""Getting a certificate from the cloud's PKI API, for ``fieldline edge enroll`` and for renewal.

``enroll`` generates the gateway's key on the gateway (it never leaves: only a CSR with ``CN=<gateway id>`` is
sent), pays with the one-time token an operator created, and stores what comes back beside the key: the
certificate file holds the new certificate then the issuing intermediate (what the gateway presents to the
broker), and the CA file named by ``uplink.tls.ca`` receives the CA chain when it does not exist yet. Every
file is written atomically; the key with mode 0600.

``PkiClient`` is the HTTP side, shared with renewal: each refusal becomes a ``PkiError`` carrying the server's
detail (``the enrollment token was already used at ...``), an unreachable cloud a retryable one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from certs import KeyKind, PrivateKey, generate_key, make_csr, write_pem, write_private_key
from certs.tls import client_context
from edge_agent.config import AgentConfig
from edge_agent.errors import PkiError

ENROLL_PATH = "/api/v1/pki/enroll"
RENEW_PATH = "/api/v1/pki/renew"


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    chain: list[x509.Certificate]
    """The CA chain the cloud returned: issuing intermediate, then root."""

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    def presented(self) -> list[x509.Certificate]:
        """What the gateway presents in its TLS handshake: the certificate and the intermediates (no root)."""
        return [self.certificate, *(c for c in self.chain if c.subject != c.issuer)]


class PkiClient:
    """The cloud's PKI endpoints over HTTP(S): ``async with PkiClient(url) as pki: await pki.enroll(...)``."""

    def __init__(self, cloud_url: str, *, ca_file: Path | None = None, timeout: float = 30.0) -> None:
        self.cloud_url = cloud_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.cloud_url,
            verify=client_context(ca_file=ca_file) if ca_file else True,
            timeout=timeout,
        )

    async def __aenter__(self) -> PkiClient:
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self._client.aclose()

    async def enroll(self, token: str, csr: x509.CertificateSigningRequest) -> IssuedCertificate:
        return await self._post(ENROLL_PATH, {"token": token, "csr": _pem(csr)})

    async def renew(
        self, current: x509.Certificate, key: PrivateKey, csr: x509.CertificateSigningRequest
    ) -> IssuedCertificate:
        """Renew ``current``, proving possession of its ``key`` by a signature over the new CSR's DER."""
        body = {
            "certificate": _pem(current),
            "csr": _pem(csr),
            "signature": proof_of_possession(key, csr.public_bytes(serialization.Encoding.DER)),
        }
        return await self._post(RENEW_PATH, body)

    async def _post(self, path: str, body: dict[str, Any]) -> IssuedCertificate:
        url = f"{self.cloud_url}{path}"
        try:
            answer = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise PkiError(f"cannot reach the cloud: {exc or type(exc).__name__}", url=url) from exc
        if answer.status_code != 201:
            raise PkiError(_refusal(answer), url=url, status=answer.status_code)
        try:
            data = answer.json()
            certificate = x509.load_pem_x509_certificate(data["certificate"].encode())
            chain = x509.load_pem_x509_certificates(data["chain"].encode())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PkiError(
                f"unreadable answer from the cloud ({exc})", url=url, status=answer.status_code
            ) from exc
        return IssuedCertificate(certificate, chain)


def _refusal(answer: httpx.Response) -> str:
    try:
        problem = answer.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict) and problem.get("detail"):
        return f"{answer.status_code} {problem.get('title', '')}: {problem['detail']}".replace("  ", " ")
    return f"{answer.status_code} {answer.reason_phrase}"


def proof_of_possession(key: PrivateKey, data: bytes) -> str:
    """Base64 signature of ``data`` with ``key``: ECDSA with SHA-256, or RSA PKCS#1 v1.5 with SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    else:
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


def check_issued(issued: IssuedCertificate, key: PrivateKey, gateway_id: str, *, url: str) -> None:
    """Refuse an answer that does not certify our key for our id (a misrouted or tampered answer)."""
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    ours = key.public_key().public_bytes(serialization.Encoding.DER, public)
    theirs = issued.certificate.public_key().public_bytes(serialization.Encoding.DER, public)
    if ours != theirs:
        raise PkiError("the cloud returned a certificate for another key", url=url)
    if issued.certificate.subject.rfc4514_string() != f"CN={gateway_id}":
        raise PkiError(
            f"the cloud returned a certificate for {issued.certificate.subject.rfc4514_string()}", url=url
        )


@dataclass(frozen=True)
class IdentityFiles:
    """Where the gateway's identity lives: the uplink's ``tls.key``, ``tls.cert`` and (optional) ``tls.ca``."""

    key: Path
    cert: Path
    ca: Path | None = None

    @classmethod
    def of(cls, config: AgentConfig) -> IdentityFiles:
        """The files ``config`` names; raises ``ValueError`` when ``uplink.tls`` names no certificate and key."""
        tls = config.uplink.tls
        if tls is None or tls.cert is None or tls.key is None:
            raise ValueError(
                "the configuration names no certificate: set uplink.tls.cert and uplink.tls.key "
                "(where the certificate and the key are kept)"
            )
        return cls(key=tls.key, cert=tls.cert, ca=tls.ca)

    def store(self, issued: IssuedCertificate, key: PrivateKey | None = None) -> None:
        """Write the key (when new), then the certificate with its intermediates; the CA chain too when the CA
        file does not exist yet."""
        if key is not None:
            write_private_key(self.key, key)
        write_pem(self.cert, *issued.presented())
        if self.ca is not None and not self.ca.exists():
            write_pem(self.ca, *issued.chain)


async def enroll(
    gateway_id: str,
    files: IdentityFiles,
    *,
    cloud_url: str,
    token: str,
    ca_file: Path | None = None,
    key_kind: KeyKind = "ec-p256",
    http_timeout: float = 30.0,
) -> IssuedCertificate:
    """Generate a key, have the cloud certify it for ``gateway_id`` with ``token``, and store key, certificate
    and chain. Nothing is written when the cloud refuses."""
    key = generate_key(key_kind)
    async with PkiClient(cloud_url, ca_file=ca_file, timeout=http_timeout) as pki:
        issued = await pki.enroll(token, make_csr(key, gateway_id))
    check_issued(issued, key, gateway_id, url=f"{pki.cloud_url}{ENROLL_PATH}")
    files.store(issued, key)
    return issued


def _pem(value: x509.Certificate | x509.CertificateSigningRequest) -> str:
    return value.public_bytes(serialization.Encoding.PEM).decode()
