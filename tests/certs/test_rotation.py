"""Rotating the issuing intermediate: both generations stay trusted and revocable until the old one expires, on
a real Mosquitto and through the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from certs import CaError, RevokedCertificate, create_authority, load_authority, load_certificates
from certs.cli import app
from certs.crl import crl_bundle, parse_crls
from certs.crl_sync import install_crl
from certs.rotation import issuing_authorities, rotate_intermediate
from tests.servicekit import free_port
from tests.tlskit import TlsMosquitto, refusal, write_client

REVOKED = "SSLV3_ALERT_CERTIFICATE_REVOKED"


def test_rotation_needs_the_root_key(tmp_path: Path) -> None:
    create_authority(tmp_path / "ca", root_passphrase=b"offline")
    with pytest.raises(CaError, match="wrong passphrase"):
        rotate_intermediate(tmp_path / "ca", root_passphrase=b"guess")
    (tmp_path / "ca" / "root.key").rename(tmp_path / "vault.key")
    with pytest.raises(CaError, match="bring the offline root key back"):
        rotate_intermediate(tmp_path / "ca")


def test_both_generations_connect_and_stay_revocable(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    old = create_authority(directory, root_passphrase=b"offline")
    old_gateway = write_client(old, tmp_path / "clients", "gw-old")
    new = rotate_intermediate(directory, root_passphrase=b"offline")
    assert new.certificate.subject.rfc4514_string() == "CN=Fieldline Issuing CA 2,O=Fieldline"
    assert new.chain == [new.certificate, old.certificate, old.root]
    assert load_authority(directory).chain == new.chain
    new_gateway = write_client(new, tmp_path / "clients", "gw-new")
    authorities = issuing_authorities(directory, datetime.now(UTC))
    assert [a.certificate for a in authorities] == [new.certificate, old.certificate]

    broker = TlsMosquitto(port=free_port(), workdir=tmp_path / "broker", ca=new)
    broker.layout.crlfile.write_bytes(crl_bundle([a.build_crl([]) for a in authorities]))
    broker.start()
    try:
        for gateway, name in ((old_gateway, "gw-old"), (new_gateway, "gw-new")):
            gateway.ca_file.write_bytes(new.chain_pem())
            assert refusal(broker, gateway, name) is None, name
        serial = load_certificates(old_gateway.cert_file)[0].serial_number
        revoked = [RevokedCertificate(serial, datetime.now(UTC))]
        bundle = crl_bundle([a.build_crl(revoked) for a in authorities])
        outcome = install_crl(
            bundle, chain=new.chain, out=broker.layout.crlfile, now=datetime.now(UTC), source="t"
        )
        assert outcome.installed
        assert len(parse_crls(broker.layout.crlfile.read_bytes(), source="t")) == 2
        broker.reload()
        assert refusal(broker, old_gateway, "gw-old") == REVOKED
        assert refusal(broker, new_gateway, "gw-new") is None
        # Without the old intermediate's CRL, OpenSSL cannot check its certificates and refuses them all.
        broker.layout.crlfile.write_bytes(crl_bundle([new.build_crl(revoked)]))
        broker.restart()
        assert refusal(broker, write_client(old, tmp_path / "clients", "gw-old-2", trust=new), "gw-old-2")
    finally:
        broker.stop()


def test_rotation_through_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "pass").write_text("offline\n")
    directory = tmp_path / "ca"
    assert (
        runner.invoke(
            app, ["init", "--dir", str(directory), "--root-passphrase-file", str(tmp_path / "pass")]
        ).exit_code
        == 0
    )
    result = runner.invoke(
        app,
        ["rotate-intermediate", "--dir", str(directory), "--root-passphrase-file", str(tmp_path / "pass")],
    )
    assert result.exit_code == 0, result.output
    assert "Issuing CA 2" in result.output
    assert len(load_certificates(directory / "chain.pem")) == 3
    result = runner.invoke(app, ["crl", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    crls = parse_crls((directory / "crl.pem").read_bytes(), source="t")
    assert [c.issuer.rfc4514_string() for c in crls] == [
        "CN=Fieldline Issuing CA 2,O=Fieldline",
        "CN=Fieldline Issuing CA 1,O=Fieldline",
    ]
    result = runner.invoke(app, ["crl", "--dir", str(directory), "--der"])
    assert result.exit_code == 1
    assert "a DER file holds one CRL" in result.output


def test_root_rotation_overlap_takes_effect_on_sighup(tmp_path: Path) -> None:
    """Root rotation, step 1 (docs/security.md): the broker trusts both chains and holds both CRLs; a SIGHUP is
    enough for gateways of the new root to connect while those of the old one still do."""
    old = create_authority(tmp_path / "old")
    new = create_authority(tmp_path / "new", organization="Fieldline 2036")
    broker = TlsMosquitto(port=free_port(), workdir=tmp_path / "broker", ca=old)
    broker.start()
    try:
        newcomer = write_client(new, tmp_path / "clients", "gw-new", trust=old)
        assert refusal(broker, newcomer, "gw-new") == "TLSV1_ALERT_UNKNOWN_CA"
        broker.layout.cafile.write_bytes(old.chain_pem() + new.chain_pem())
        broker.layout.crlfile.write_bytes(crl_bundle([old.build_crl([]), new.build_crl([])]))
        broker.reload()
        assert refusal(broker, newcomer, "gw-new") is None
        assert refusal(broker, write_client(old, tmp_path / "clients", "gw-old"), "gw-old") is None
    finally:
        broker.stop()
