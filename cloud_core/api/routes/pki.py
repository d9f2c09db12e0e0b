"""``/api/v1/.../enrollment-tokens``, ``/api/v1/pki/...``: enrollment tokens (operators), enrollment (the token
authenticates), renewal (the current certificate authenticates, by proof of possession), revocation (admins),
and the public CA chain and CRL. See docs/enrollment.md."""

from __future__ import annotations

from math import ceil
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response

from certs.crl import crl_bundle
from cloud_core.api.deps import AdminDep, OperatorDep, ServicesDep
from cloud_core.pki import Issued, PkiService
from cloud_core.problems import Problem
from cloud_core.schemas.common import EntityId, problem_responses
from cloud_core.schemas.pki import (
    CertificateIssued,
    CertificatePublic,
    EnrollRequest,
    OwnerRevoked,
    RenewRequest,
    RevokeRequest,
    TokenCreate,
    TokenCreated,
)

router = APIRouter(prefix="/api/v1", tags=["pki"])

PEM_CHAIN = "application/pem-certificate-chain"
PEM_FILE = "application/x-pem-file"
DER_CRL = "application/pkix-crl"


def _pki(services: ServicesDep) -> PkiService:
    pki = services.parts.get("pki")
    if pki is None:
        raise Problem(
            503, "Service unavailable", "the PKI service is off (pki.enabled: false)", type="pki-off"
        )
    return pki


def _public(request: Request, services: ServicesDep) -> PkiService:
    """The PKI service for a request anyone may make, within its client address's rate limit."""
    pki = _pki(services)
    wait = pki.public_limit.wait(request.client.host if request.client else "")
    if wait > 0:
        seconds = ceil(wait)
        raise Problem(
            429,
            "Too many requests",
            f"at most {pki.settings.public_rate:g} enrollment and renewal requests a minute from one address "
            f"(bursts of {pki.settings.public_burst}); retry in {seconds} s",
            type="rate-limited",
            headers={"Retry-After": str(seconds)},
        )
    return pki


PublicPkiDep = Annotated[PkiService, Depends(_public)]


def _binary(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    schema = {"schema": {"type": "string"}}
    return {200: {"description": description, "content": dict.fromkeys(media_types, schema)}}


async def _token(
    services: ServicesDep, kind: str, owner_id: str, body: TokenCreate | None, principal_id: str
) -> TokenCreated:
    new = await _pki(services).create_token(
        kind, owner_id, ttl=body.ttl if body else None, created_by=principal_id
    )
    row = new.row
    return TokenCreated(
        token=new.token, kind=kind, owner_id=owner_id, created_at=row.created_at, expires_at=row.expires_at
    )


@router.post(
    "/gateways/{gateway_id}/enrollment-tokens",
    status_code=201,
    response_model=TokenCreated,
    responses=problem_responses(401, 403, 404, 422),
)
async def create_gateway_token(
    gateway_id: str,
    services: ServicesDep,
    principal: OperatorDep,
    body: Annotated[TokenCreate | None, Body()] = None,
) -> TokenCreated:
    """A one-time enrollment token for a registered gateway; the response is the only place it appears."""
    return await _token(services, "gateway", gateway_id, body, principal.id)


@router.post(
    "/devices/{device_id}/enrollment-tokens",
    status_code=201,
    response_model=TokenCreated,
    responses=problem_responses(401, 403, 404, 422),
)
async def create_device_token(
    device_id: str,
    services: ServicesDep,
    principal: OperatorDep,
    body: Annotated[TokenCreate | None, Body()] = None,
) -> TokenCreated:
    """A one-time enrollment token for a registered device that speaks TLS itself."""
    return await _token(services, "device", device_id, body, principal.id)


def _issued(issued: Issued) -> CertificateIssued:
    return CertificateIssued(
        certificate=issued.pem,
        chain=issued.chain_pem,
        serial=issued.row.serial,
        not_after=issued.row.not_after,
    )


@router.post(
    "/pki/enroll",
    status_code=201,
    response_model=CertificateIssued,
    responses=problem_responses(403, 422, 429),
)
async def enroll(body: EnrollRequest, pki: PublicPkiDep) -> CertificateIssued:
    """Sign a CSR paid for by an enrollment token (no API key: the token authenticates). Refusals say which
    check failed: 403 for the token, 422 for the CSR, 429 past the client address's rate limit."""
    return _issued(await pki.enroll(body.token, body.csr))


@router.post(
    "/pki/renew",
    status_code=201,
    response_model=CertificateIssued,
    responses=problem_responses(403, 422, 429),
)
async def renew(body: RenewRequest, pki: PublicPkiDep) -> CertificateIssued:
    """A new certificate for the holder of a current one (proof of possession: ``signature`` over the new CSR's
    DER with the current key). The current certificate stays valid until it expires."""
    return _issued(await pki.renew(body.certificate, body.csr, body.signature))


async def _revoke_owner(
    services: ServicesDep, kind: str, owner_id: str, body: RevokeRequest | None
) -> OwnerRevoked:
    reason = x509.ReasonFlags((body or RevokeRequest()).reason)
    rows = await _pki(services).revoke_owner(kind, owner_id, reason)
    return OwnerRevoked(
        kind=kind, owner_id=owner_id, revoked=[CertificatePublic.model_validate(r) for r in rows]
    )


@router.post(
    "/gateways/{gateway_id}/revoke",
    response_model=OwnerRevoked,
    responses=problem_responses(401, 403, 404, 422),
)
async def revoke_gateway(
    gateway_id: str,
    services: ServicesDep,
    _: AdminDep,
    body: Annotated[RevokeRequest | None, Body()] = None,
) -> OwnerRevoked:
    """Revoke every unexpired certificate of a gateway and its unused enrollment tokens; the CRL lists them at
    once. The gateway can neither renew nor enroll with a token issued before this call."""
    return await _revoke_owner(services, "gateway", gateway_id, body)


@router.post(
    "/devices/{device_id}/revoke",
    response_model=OwnerRevoked,
    responses=problem_responses(401, 403, 404, 422),
)
async def revoke_device(
    device_id: str,
    services: ServicesDep,
    _: AdminDep,
    body: Annotated[RevokeRequest | None, Body()] = None,
) -> OwnerRevoked:
    """Revoke every unexpired certificate of a device and its unused enrollment tokens."""
    return await _revoke_owner(services, "device", device_id, body)


@router.post(
    "/pki/certificates/{serial}/revoke",
    response_model=CertificatePublic,
    responses=problem_responses(401, 403, 404, 422),
)
async def revoke_certificate(
    serial: str,
    services: ServicesDep,
    _: AdminDep,
    body: Annotated[RevokeRequest | None, Body()] = None,
) -> CertificatePublic:
    """Revoke one certificate by serial (hexadecimal); idempotent, the first reason and date stay."""
    reason = x509.ReasonFlags((body or RevokeRequest()).reason)
    return CertificatePublic.model_validate(await _pki(services).revoke_serial(serial, reason))


@router.get(
    "/pki/certificates",
    response_model=list[CertificatePublic],
    responses=problem_responses(401, 403, 422),
)
async def list_certificates(
    services: ServicesDep,
    _: AdminDep,
    owner: Annotated[EntityId | None, Query(description="gateway or device id")] = None,
    kind: Annotated[str | None, Query(pattern="^(gateway|device)$")] = None,
    revoked: Annotated[bool | None, Query(description="only revoked (true) or unrevoked (false)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CertificatePublic]:
    """Issued certificates, newest first."""
    rows = await _pki(services).list_certificates(owner=owner, kind=kind, revoked=revoked, limit=limit)
    return [CertificatePublic.model_validate(r) for r in rows]


@router.get(
    "/pki/crl",
    response_class=Response,
    responses=_binary(
        "the current CRL, PEM by default, DER with Accept: application/pkix-crl", PEM_FILE, DER_CRL
    ),
)
async def crl(services: ServicesDep, accept: Annotated[str | None, Header()] = None) -> Response:
    """The certificate revocation list, current with the database's revocations (public): in PEM, one CRL per
    issuing intermediate (one, unless an intermediate was rotated), the broker's ``crlfile`` as is; in DER, the
    current intermediate's."""
    crls = await _pki(services).crl()
    if accept is not None and DER_CRL in accept:
        return Response(crls[0].public_bytes(serialization.Encoding.DER), media_type=DER_CRL)
    return Response(crl_bundle(crls), media_type=PEM_FILE)


@router.get("/pki/ca", response_class=Response, responses=_binary("the CA chain (PEM)", PEM_CHAIN))
async def ca_chain(services: ServicesDep) -> Response:
    """The CA chain, issuing intermediate then root (public): what brokers and clients trust."""
    return Response(_pki(services).chain_pem, media_type=PEM_CHAIN)
