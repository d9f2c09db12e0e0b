"""`fieldline certs` as an operator runs it (typer's runner), and OpenSSL reading what it writes."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from certs import generate_key, load_certificates, load_private_key, make_csr
from certs.cli import app
from certs.store import CertificateStore, format_serial
from tests.servicekit import require_binary

runner = CliRunner()


def certs(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    (tmp_path / "pass").write_text("correct horse\n")
    code, output = certs("init", "--dir", tmp_path / "ca", "--root-passphrase-file", tmp_path / "pass")
    assert code == 0, output
    return tmp_path / "ca"


def _csr_file(path: Path, cn: str) -> Path:
    path.write_bytes(make_csr(generate_key(), cn).public_bytes(serialization.Encoding.PEM))
    return path


def test_init_writes_private_keys_and_an_encrypted_root_key(ca_dir: Path) -> None:
    assert sorted(p.name for p in ca_dir.iterdir()) == [
        "chain.pem", "intermediate.key", "intermediate.pem", "root.key", "root.pem",
    ]  # fmt: skip
    for name in ("root.key", "intermediate.key"):
        assert stat.S_IMODE(os.stat(ca_dir / name).st_mode) == 0o600
    load_private_key(ca_dir / "root.key", b"correct horse")
    code, output = certs("init", "--dir", ca_dir)
    assert code == 1
    assert "a CA already exists here" in output
    assert "Traceback" not in output


def test_init_without_passphrase_warns(tmp_path: Path) -> None:
    code, output = certs("init", "--dir", tmp_path / "ca", "--key-type", "rsa", "--org", "Acme")
    assert code == 0
    assert "root.key is not encrypted" in output
    assert (
        load_certificates(tmp_path / "ca" / "root.pem")[0].subject.rfc4514_string()
        == "CN=Acme Root CA,O=Acme"
    )


def test_issue_from_a_csr(ca_dir: Path, tmp_path: Path) -> None:
    code, output = certs(
        "issue", "--dir", ca_dir, "--cn", "gw-7", "--csr", _csr_file(tmp_path / "gw.csr", "gw-7"),
        "--out", tmp_path / "gw-7.pem", "--days", "30",
    )  # fmt: skip
    assert code == 0, output
    leaf, intermediate = load_certificates(tmp_path / "gw-7.pem")
    assert leaf.subject.rfc4514_string() == "CN=gw-7"
    assert intermediate == load_certificates(ca_dir / "intermediate.pem")[0]
    record = CertificateStore.open(ca_dir).find(leaf.serial_number)
    assert record is not None
    assert record.common_name == "gw-7"
    assert (ca_dir / "issued" / f"{record.serial}.pem").exists()


def test_issue_refuses_a_csr_for_another_subject(ca_dir: Path, tmp_path: Path) -> None:
    code, output = certs(
        "issue", "--dir", ca_dir, "--cn", "gw-7", "--csr", _csr_file(tmp_path / "x.csr", "gw-8")
    )
    assert code == 1
    assert output.strip() == "Error: the CSR's subject CN is 'gw-8'; expected 'gw-7'"


def test_issue_refuses_a_csr_with_a_bad_signature(ca_dir: Path, tmp_path: Path) -> None:
    der = bytearray(make_csr(generate_key(), "gw-7").public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF
    (tmp_path / "bad.csr").write_bytes(bytes(der))
    code, output = certs("issue", "--dir", ca_dir, "--cn", "gw-7", "--csr", tmp_path / "bad.csr")
    assert code == 1
    assert "signature does not verify" in output


def test_issue_reports_unreadable_input_in_one_line(ca_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.csr").write_text("hello")
    for args in (
        ("issue", "--dir", ca_dir, "--cn", "gw-7", "--csr", tmp_path / "junk.csr"),
        ("issue", "--dir", ca_dir, "--cn", "gw-7", "--csr", tmp_path / "missing.csr"),
        ("issue", "--dir", tmp_path / "nowhere", "--cn", "gw-7", "--csr", tmp_path / "junk.csr"),
        ("revoke", "--dir", ca_dir, "--serial", "zz", "--reason", "keyCompromise"),
        ("issue-server", "--dir", ca_dir, "--name", "broker", "--san", "IP:not-an-ip"),
    ):
        code, output = certs(*args)
        assert code == 1, args
        assert output.startswith("Error: "), output
        assert len(output.strip().splitlines()) == 1, output


def test_revoke_then_crl_lists_the_serial(ca_dir: Path, tmp_path: Path) -> None:
    certs(
        "issue",
        "--dir",
        ca_dir,
        "--cn",
        "gw-7",
        "--csr",
        _csr_file(tmp_path / "gw.csr", "gw-7"),
        "--out",
        tmp_path / "gw.pem",
    )
    serial = load_certificates(tmp_path / "gw.pem")[0].serial_number
    code, output = certs(
        "revoke", "--dir", ca_dir, "--serial", format_serial(serial), "--reason", "keyCompromise"
    )
    assert code == 0, output
    code, output = certs(
        "revoke", "--dir", ca_dir, "--serial", format_serial(serial), "--reason", "superseded"
    )
    assert code == 1
    assert "already revoked" in output
    code, output = certs("revoke", "--dir", ca_dir, "--serial", "1234", "--reason", "superseded")
    assert code == 1
    assert "no certificate with serial 1234" in output
    code, output = certs("crl", "--dir", ca_dir)
    assert code == 0, output
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    assert crl.next_update_utc is not None
    certs("crl", "--dir", ca_dir, "--der", "--out", tmp_path / "crl.der")
    again = x509.load_der_x509_crl((tmp_path / "crl.der").read_bytes())
    assert again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > (
        crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    )
    code, output = certs("inspect", tmp_path / "gw.pem", "--dir", ca_dir)
    assert "YES" in output
    assert "keyCompromise" in output


def test_inspect_summarises_certificates_csrs_and_crls(ca_dir: Path, tmp_path: Path) -> None:
    code, output = certs(
        "issue-server", "--dir", ca_dir, "--name", "broker", "--san", "DNS:mqtt.example.com,IP:10.0.0.5",
        "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, output
    code, output = certs("inspect", tmp_path / "broker.pem", "--dir", ca_dir)
    assert code == 0, output
    for expected in (
        "CN=broker", "DNS:mqtt.example.com, IP:10.0.0.5", "EC P-256", "serverAuth", "days left",
        "CN=Fieldline Issuing CA 1", "revoked", "no", "CA certificate",
    ):  # fmt: skip
        assert expected in output, expected
    code, output = certs("inspect", _csr_file(tmp_path / "gw.csr", "gw-1"))
    assert code == 0
    assert "certificate signing request" in output
    assert "CN=gw-1" in output
    certs("crl", "--dir", ca_dir, "--der")
    code, output = certs("inspect", ca_dir / "crl.der")
    assert code == 0
    assert "certificate revocation list" in output
    assert "CRL number" in output


def test_broker_config_writes_a_complete_directory(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "broker"
    code, output = certs(
        "broker-config", "--dir", ca_dir, "--out", out, "--port", "18883", "--cloud-client", "core"
    )
    assert code == 0, output
    conf = (out / "mosquitto.conf").read_text()
    for line in (
        "listener 18883",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
    ):
        assert line in conf.splitlines()
    assert f"crlfile {(out / 'crl.pem').resolve()}" in conf
    acl = (out / "acl").read_text()
    assert "pattern write fl/%u/up/#" in acl
    assert not [line for line in acl.splitlines() if line.startswith("user ")]
    assert "user core" in (out / "acl-cloud").read_text()
    assert load_certificates(out / "core.pem")[0].subject.rfc4514_string() == "CN=core"
    assert stat.S_IMODE(os.stat(out / "broker.key").st_mode) == 0o600
    broker_cert = (out / "broker.pem").read_bytes()
    certs("broker-config", "--dir", ca_dir, "--out", out, "--port", "18883", "--cloud-client", "core")
    assert (out / "broker.pem").read_bytes() == broker_cert  # kept: still valid and from this CA


def test_openssl_accepts_certificates_and_crls(ca_dir: Path, tmp_path: Path) -> None:
    openssl = require_binary("openssl")
    certs("issue-server", "--dir", ca_dir, "--name", "broker", "--san", "DNS:localhost", "--out", tmp_path)
    certs(
        "issue",
        "--dir",
        ca_dir,
        "--cn",
        "gw-1",
        "--csr",
        _csr_file(tmp_path / "gw.csr", "gw-1"),
        "--out",
        tmp_path / "gw.pem",
    )
    certs("crl", "--dir", ca_dir)
    certs("crl", "--dir", ca_dir, "--der")
    untrusted = ["-untrusted", str(ca_dir / "intermediate.pem")]
    for cert in ("broker.pem", "gw.pem"):
        result = subprocess.run(
            [openssl, "verify", "-CAfile", str(ca_dir / "root.pem"), *untrusted, str(tmp_path / cert)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(": OK")
    chain = str(ca_dir / "chain.pem")
    for args in (["-in", str(ca_dir / "crl.pem")], ["-inform", "DER", "-in", str(ca_dir / "crl.der")]):
        result = subprocess.run(
            [openssl, "crl", *args, "-CAfile", chain, "-noout"], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "verify OK" in result.stderr + result.stdout
    # The CRL check itself: a revoked certificate fails `openssl verify -crl_check`.
    serial = load_certificates(tmp_path / "gw.pem")[0].serial_number
    certs("revoke", "--dir", ca_dir, "--serial", format_serial(serial), "--reason", "keyCompromise")
    certs("crl", "--dir", ca_dir)
    result = subprocess.run(
        [openssl, "verify", "-crl_check", "-CAfile", str(ca_dir / "root.pem"), *untrusted, "-CRLfile",
         str(ca_dir / "crl.pem"), str(tmp_path / "gw.pem")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr
