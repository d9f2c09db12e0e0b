"""Private keys and PEM files: generation (EC P-256 by default, RSA 3072), atomic writes with the right modes,
loading with errors that name the file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certs.errors import CertificateFileError

KeyKind = Literal["ec-p256", "rsa-3072"]
KEY_KINDS: tuple[str, ...] = get_args(KeyKind)
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key(kind: KeyKind = "ec-p256") -> PrivateKey:
    """A new private key: EC on P-256 (small, fast on a Pi) or RSA 3072 for peers that need RSA."""
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unknown key kind {kind!r}; expected one of {', '.join(KEY_KINDS)}")


def describe_key(key: object) -> str:
    """``EC P-256``, ``RSA 3072``… for summaries and error messages (public or private keys)."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {names.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, created with ``mode`` (so a
    private key is never readable by others, not even for an instant), fsynced, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes | None = None) -> None:
    """PKCS#8 PEM, mode 0600, atomic; encrypted with the best available scheme when ``passphrase`` is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_atomic(path, data, 0o600)


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM private key; a missing, unreadable, encrypted-without-passphrase or unsupported key raises
    :class:`CertificateFileError` saying which."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise CertificateFileError("the key is encrypted: a passphrase is needed", path=path) from None
        raise CertificateFileError("the key is not encrypted but a passphrase was given", path=path) from None
    except ValueError as exc:
        message = "wrong passphrase or not a PEM private key" if passphrase else "not a PEM private key"
        raise CertificateFileError(message, path=path) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateFileError(f"unsupported key type {type(key).__name__}", path=path)
    return key


def write_pem(path: Path, *certs: x509.Certificate) -> None:
    """Certificates in PEM, one after the other (a chain: leaf first), mode 0644, atomic."""
    write_atomic(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs), 0o644)


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every PEM certificate in ``path``, in file order; none at all is an error."""
    data = _read(path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateFileError(f"no readable PEM certificate ({exc})", path=path) from exc
    return certs


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateFileError("no such file", path=path) from None
    except OSError as exc:
        raise CertificateFileError(exc.strerror or str(exc), path=path) from exc
