"""Fieldline's PKI: a root and an issuing intermediate CA, CSR checks and signing, CRLs, TLS contexts, and the
Mosquitto TLS/ACL configuration that keeps each gateway on its own topics. Built on ``cryptography`` only.

The public names are re-exported here; the modules behind them are implementation detail."""

from certs.authority import CertificateAuthority, RevokedCertificate, create_authority, load_authority
from certs.csr import check_csr, load_csr, make_csr
from certs.errors import CaError, CertificateFileError, CertsError, CrlError, CsrRejected, StoreError
from certs.keys import (
    KeyKind,
    PrivateKey,
    generate_key,
    load_certificates,
    load_private_key,
    write_pem,
    write_private_key,
)
from certs.validity import needs_renewal, remaining_fraction

__all__ = [
    "CaError",
    "CertificateAuthority",
    "CertificateFileError",
    "CertsError",
    "CrlError",
    "CsrRejected",
    "KeyKind",
    "PrivateKey",
    "RevokedCertificate",
    "StoreError",
    "check_csr",
    "create_authority",
    "generate_key",
    "load_authority",
    "load_certificates",
    "load_csr",
    "load_private_key",
    "make_csr",
    "needs_renewal",
    "remaining_fraction",
    "write_pem",
    "write_private_key",
]
