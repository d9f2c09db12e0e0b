"""The PKI API on the wire: enrollment tokens, enrollment and renewal requests, issued certificates, revocation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from cloud_core.schemas.timestamps import UtcDateTime
from fieldline.durations import parse_duration

MAX_PEM = 16 * 1024

RevocationReason = Literal[
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
    "aACompromise",
]
"""RFC 5280 reason codes a revocation may give (``certificateHold`` is left out: revocation here is final)."""

Ttl = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "examples": ["24h", "30m"]},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "how long the token stays usable: 30m, 24h, 7d or seconds "
            "(default pki.token_ttl, at most pki.max_token_ttl)",
        }
    ),
]
Pem = Annotated[str, Field(min_length=1, max_length=MAX_PEM)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenCreate(_Request):
    ttl: Ttl | None = None


class TokenCreated(BaseModel):
    token: str = Field(description="the enrollment token; shown once, only its SHA-256 is stored")
    kind: Literal["gateway", "device"]
    owner_id: str = Field(description="the gateway or device id the CSR's subject must name (CN=<id>)")
    created_at: UtcDateTime
    expires_at: UtcDateTime


class EnrollRequest(_Request):
    token: str = Field(min_length=1, max_length=200, description="the enrollment token an operator created")
    csr: Pem = Field(description="PEM CSR whose subject is exactly CN=<gateway or device id>")


class RenewRequest(_Request):
    certificate: Pem = Field(description="the current certificate (PEM), issued by this cloud")
    csr: Pem = Field(description="PEM CSR for the new certificate, subject CN=<the current certificate's CN>")
    signature: str = Field(
        min_length=1,
        max_length=2048,
        description="base64 signature over the new CSR's DER bytes, made with the current private key "
        "(ECDSA with SHA-256, or RSA PKCS#1 v1.5 with SHA-256)",
    )


class CertificateIssued(BaseModel):
    certificate: str = Field(description="the new certificate (PEM)")
    chain: str = Field(description="the CA chain (PEM): issuing intermediate, then root")
    serial: str = Field(description="lower-case hexadecimal")
    not_after: UtcDateTime


class RevokeRequest(_Request):
    reason: RevocationReason = "unspecified"


class CertificatePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    serial: str = Field(description="lower-case hexadecimal")
    subject: str
    kind: Literal["gateway", "device"]
    owner_id: str
    fingerprint: str = Field(description="SHA-256 of the DER certificate (hexadecimal)")
    not_before: UtcDateTime
    not_after: UtcDateTime
    issued_at: UtcDateTime
    issued_via: Literal["enroll", "renew"]
    renewed_from: str | None
    revoked_at: UtcDateTime | None
    reason: str | None


class OwnerRevoked(BaseModel):
    kind: Literal["gateway", "device"]
    owner_id: str
    revoked: list[CertificatePublic] = Field(description="the certificates revoked by this call")
