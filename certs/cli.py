"""``fieldline certs``: make and run a small CA from the command line (root + issuing intermediate), issue and
revoke certificates, publish CRLs, write the broker's mutual-TLS/ACL configuration and keep its CRL in sync.

Every failure prints one line on stderr and exits 1."""

from __future__ import annotations

import ipaddress
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from cryptography import x509
from rich.console import Console
from rich.table import Table

from certs.errors import CertsError

if TYPE_CHECKING:
    from certs.store import CertificateStore

app = typer.Typer(
    help="PKI: a root and issuing CA, certificates, CRLs, the broker's TLS/ACL configuration.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True, highlight=False)

CaDir = Annotated[
    Path, typer.Option("--dir", envvar="FIELDLINE_CA_DIR", help="The CA directory (or $FIELDLINE_CA_DIR).")
]
KeyType = Literal["ec", "rsa"]
KEY_KINDS = {"ec": "ec-p256", "rsa": "rsa-3072"}


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except CertsError as exc:
        errors.print(f"Error: {exc}", markup=False)
        raise typer.Exit(1) from None
    except OSError as exc:
        errors.print(f"Error: {exc.filename or ''}: {exc.strerror or exc}", markup=False)
        raise typer.Exit(1) from None


def parse_sans(text: str) -> list[x509.GeneralName]:
    """``DNS:broker.example.com,IP:10.0.0.5`` into SAN entries; raises :class:`CertsError` on a bad item."""
    names: list[x509.GeneralName] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, value = item.partition(":")
        if kind.upper() == "DNS" and value:
            names.append(x509.DNSName(value))
        elif kind.upper() == "IP" and value:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(value)))
            except ValueError:
                raise CertsError(f"--san: {value!r} is not an IP address") from None
        else:
            raise CertsError(f"--san: {item!r} should look like DNS:name or IP:address")
    return names


def _passphrase(passphrase_file: Path | None, prompt: bool) -> bytes | None:
    if passphrase_file is not None and prompt:
        raise CertsError("give either --root-passphrase-file or --prompt, not both")
    if passphrase_file is not None:
        lines = passphrase_file.read_text().splitlines()
        secret = lines[0] if lines else ""
        if not secret:
            raise CertsError(f"{passphrase_file}: the passphrase file is empty")
        return secret.encode()
    if prompt:
        return typer.prompt("Root key passphrase", hide_input=True, confirmation_prompt=True).encode()
    return None


@app.command()
def init(
    directory: CaDir,
    key_type: Annotated[KeyType, typer.Option("--key-type", help="ec (P-256) or rsa (3072 bits).")] = "ec",
    root_passphrase_file: Annotated[
        Path | None, typer.Option(help="Encrypt the root key with the first line of this file.")
    ] = None,
    prompt: Annotated[bool, typer.Option("--prompt", help="Ask for the root key's passphrase.")] = False,
    org: Annotated[str, typer.Option("--org", help="Organisation name in the CA subjects.")] = "Fieldline",
) -> None:
    """Create a root CA and an issuing intermediate in --dir. Keep root.key offline afterwards: only the
    intermediate signs. Refuses to overwrite an existing CA."""
    from certs.authority import create_authority

    with _one_line_errors():
        passphrase = _passphrase(root_passphrase_file, prompt)
        ca = create_authority(
            directory,
            key_kind=KEY_KINDS[key_type],  # type: ignore[arg-type]
            organization=org,
            root_passphrase=passphrase,
        )
    console.print(
        f"CA created in {directory}: {ca.root.subject.rfc4514_string()} → {ca.certificate.subject.rfc4514_string()}"
    )
    if passphrase is None:
        errors.print(
            "warning: root.key is not encrypted; use --root-passphrase-file or --prompt, or move it offline"
        )
    console.print(
        f"Move {directory / 'root.key'} to offline storage; chain.pem is what brokers and clients trust."
    )


@app.command("rotate-intermediate")
def rotate_intermediate(
    directory: CaDir,
    root_passphrase_file: Annotated[
        Path | None, typer.Option(help="The root key's passphrase (first line of this file).")
    ] = None,
    prompt: Annotated[bool, typer.Option("--prompt", help="Ask for the root key's passphrase.")] = False,
    days: Annotated[int, typer.Option("--days", min=1, help="Validity of the new intermediate.")] = 1825,
) -> None:
    """Sign a new issuing intermediate with the root (bring root.key back for this); the old one is retired but
    stays trusted in chain.pem and keeps signing its CRL until it expires. Redistribute chain.pem and the CRL."""
    from certs.rotation import rotate_intermediate as rotate

    with _one_line_errors():
        ca = rotate(
            directory,
            root_passphrase=_passphrase(root_passphrase_file, prompt),
            validity=timedelta(days=days),
        )
    console.print(
        f"new issuing CA: {ca.certificate.subject.rfc4514_string()} (until {ca.certificate.not_valid_after_utc:%Y-%m-%d})"
    )
    console.print(
        f"{directory / 'chain.pem'} now trusts {len(ca.chain) - 1} intermediate(s): copy it to brokers and clients"
    )
    console.print("then run `fieldline certs crl` (one CRL per intermediate) and move root.key offline again")


@app.command("issue-server")
def issue_server(
    directory: CaDir,
    name: Annotated[str, typer.Option("--name", help="The server's name (its CN), e.g. broker.")],
    san: Annotated[str, typer.Option("--san", help="DNS:name,IP:address,... (default DNS:<name>).")] = "",
    out: Annotated[
        Path, typer.Option("--out", help="Directory for <name>.pem (with the chain) and <name>.key.")
    ] = Path(),
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = 397,
    key_type: Annotated[KeyType, typer.Option("--key-type")] = "ec",
) -> None:
    """Issue a server certificate (broker, cloud API) with a new key."""
    from certs.authority import load_authority
    from certs.keys import write_pem, write_private_key
    from certs.store import CertificateStore

    with _one_line_errors():
        ca = load_authority(directory)
        sans = parse_sans(san)
        cert, key = ca.issue_server(
            name,
            sans,
            key_kind=KEY_KINDS[key_type],
            validity=timedelta(days=days),  # type: ignore[arg-type]
        )
        write_private_key(out / f"{name}.key", key)
        write_pem(out / f"{name}.pem", cert, ca.certificate)
        record = CertificateStore.open(directory).add(cert, "server")
    console.print(
        f"issued {out / f'{name}.pem'} (serial {record.serial}, until {record.not_after:%Y-%m-%d}) and {out / f'{name}.key'}"
    )


@app.command()
def issue(
    directory: CaDir,
    cn: Annotated[
        str,
        typer.Option("--cn", help="The identity: a gateway or device id; the CSR's subject must be CN=<it>."),
    ],
    csr: Annotated[Path, typer.Option("--csr", help="The certificate signing request (PEM or DER).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the certificate and chain here (default stdout).")
    ] = None,
    days: Annotated[int, typer.Option("--days", min=1, help="Validity in days.")] = 90,
) -> None:
    """Sign a client certificate from a CSR after checking its signature, subject and key."""
    from certs.authority import load_authority
    from certs.csr import load_csr
    from certs.keys import write_pem
    from certs.store import CertificateStore

    with _one_line_errors():
        ca = load_authority(directory)
        cert = ca.sign_csr(load_csr(csr), common_name=cn, validity=timedelta(days=days))
        record = CertificateStore.open(directory).add(cert, "client")
        if out is None:
            from cryptography.hazmat.primitives.serialization import Encoding

            typer.echo(
                (cert.public_bytes(Encoding.PEM) + ca.certificate.public_bytes(Encoding.PEM)).decode(),
                nl=False,
            )
        else:
            write_pem(out, cert, ca.certificate)
    errors.print(f"issued CN={cn} serial {record.serial}, valid until {record.not_after:%Y-%m-%d %H:%M} UTC")


@app.command()
def revoke(
    directory: CaDir,
    serial: Annotated[str, typer.Option("--serial", help="Hexadecimal serial, as `inspect` prints it.")],
    reason: Annotated[
        str,
        typer.Option(
            "--reason", help="RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, ..."
        ),
    ] = "unspecified",
) -> None:
    """Revoke a certificate this CA issued; publish a new CRL afterwards (`crl`)."""
    from certs.store import CertificateStore, parse_serial

    with _one_line_errors():
        record = CertificateStore.open(directory).revoke(parse_serial(serial), reason)
    console.print(
        f"revoked serial {record.serial} (CN={record.common_name}, {record.reason}); run `fieldline certs crl`"
    )


@app.command()
def crl(
    directory: CaDir,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here (default <dir>/crl.pem or crl.der).")
    ] = None,
    der: Annotated[bool, typer.Option("--der", help="DER instead of PEM.")] = False,
    days: Annotated[int, typer.Option("--days", min=1, help="Days until nextUpdate.")] = 7,
) -> None:
    """Sign a CRL listing every certificate revoked here, with a CRL number and nextUpdate (after a rotation, one
    CRL per issuing intermediate still valid, one after the other in the PEM file)."""
    from certs.crl import crl_bundle, crl_bytes
    from certs.keys import write_atomic

    with _one_line_errors():
        now = datetime.now(UTC)
        crls = _sign_crls(directory, timedelta(days=days), now)
        if der and len(crls) > 1:
            raise CertsError(
                f"a DER file holds one CRL but {len(crls)} intermediates issue (after a rotation): use PEM"
            )
        target = out or directory / ("crl.der" if der else "crl.pem")
        write_atomic(target, crl_bytes(crls[0], der=True) if der else crl_bundle(crls), 0o644)
    console.print(
        f"wrote {target}: {len(crls[0])} revoked, {len(crls)} CRL(s), "
        f"next update {now + timedelta(days=days):%Y-%m-%d %H:%M} UTC"
    )


def _sign_crls(
    directory: Path, next_update: timedelta, now: datetime
) -> list[x509.CertificateRevocationList]:
    """One CRL per issuing intermediate (the current one first), each listing every revocation of the registry
    (serials are random 159-bit numbers: listing another intermediate's serial revokes nothing else)."""
    from certs.rotation import issuing_authorities
    from certs.store import CertificateStore

    store = CertificateStore.open(directory)
    revoked, number = store.revoked(), store.next_crl_number(now)
    return [
        ca.build_crl(revoked, next_update=next_update, now=now, number=number)
        for ca in issuing_authorities(directory, now)
    ]


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A certificate (or chain), CSR or CRL, PEM or DER.")],
    directory: Annotated[
        Path | None,
        typer.Option("--dir", envvar="FIELDLINE_CA_DIR", help="Also say whether this CA issued/revoked it."),
    ] = None,
) -> None:
    """Summarise a certificate, CSR or CRL: subject, SANs, validity and time left, issuer, serial, key, revoked."""
    from certs.inspect import describe_file

    with _one_line_errors():
        authority = store = None
        if directory is not None:
            from certs.authority import load_authority
            from certs.store import CertificateStore

            authority, store = load_authority(directory), CertificateStore.open(directory)
        summaries = describe_file(file, now=datetime.now(UTC), authority=authority, store=store)
    for summary in summaries:
        table = Table(title=f"{file.name}: {summary.kind}", show_header=False, title_justify="left")
        table.add_column(style="bold", overflow="fold")
        table.add_column(overflow="fold")
        for label, value in summary.rows:
            table.add_row(label, value)
        console.print(table)


@app.command("broker-config")
def broker_config(
    directory: CaDir,
    out: Annotated[Path, typer.Option("--out", help="Directory for mosquitto.conf, acl, chain, CRL, keys.")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The gateways' listener.")] = 8883,
    bind: Annotated[str | None, typer.Option("--bind", help="Its address (default: all).")] = None,
    cloud_port: Annotated[
        int, typer.Option("--cloud-port", min=1, max=65535, help="The cloud core's listener.")
    ] = 8884,
    cloud_bind: Annotated[
        str | None,
        typer.Option("--cloud-bind", help="Its address: the cloud's private network (default: all)."),
    ] = None,
    cloud_client: Annotated[
        str, typer.Option("--cloud-client", help="CN of the cloud core's client certificate.")
    ] = "fieldline-cloud",
    server_name: Annotated[
        str, typer.Option("--server-name", help="CN of the broker's server certificate.")
    ] = "broker",
    san: Annotated[
        str, typer.Option("--san", help="SANs of the broker's certificate.")
    ] = "DNS:localhost,IP:127.0.0.1",
) -> None:
    """Write a Mosquitto 2 configuration: TLS listeners requiring client certificates (CN as username, the CRL),
    one for gateways (client id forced to the CN, an ACL keeping each on fl/<its id>/...) and one for the cloud
    core; issues the broker's and the cloud core's certificates."""
    from certs.authority import load_authority
    from certs.broker_config import write_broker_config
    from certs.store import CertificateStore

    with _one_line_errors():
        ca = load_authority(directory)
        now = datetime.now(UTC)
        crls = _sign_crls(directory, timedelta(days=7), now)
        store = CertificateStore.open(directory)
        layout = write_broker_config(
            ca,
            out,
            crls=crls,
            port=port,
            bind=bind,
            cloud_port=cloud_port,
            cloud_bind=cloud_bind,
            server_name=server_name,
            server_sans=parse_sans(san) if san else [x509.DNSName(server_name)],
            cloud_client=cloud_client,
        )
        for path, profile in ((layout.certfile, "server"), (layout.cloud_certfile, "client")):
            _record_if_new(store, path, profile)
    console.print(
        f"wrote {layout.config} (run: mosquitto -c {layout.config}), {layout.acl}, {layout.cloud_acl}"
    )
    console.print(f"gateways connect to port {port}; the cloud core to port {cloud_port} (keep it private)")
    console.print(
        f"cloud core client certificate: {layout.cloud_certfile} / {layout.cloud_keyfile}, trust {layout.cafile}"
    )
    console.print(
        f"keep {layout.crlfile} current: fieldline certs crl-sync --url <cloud>/api/v1/pki/crl --ca-file {layout.cafile} --out {layout.crlfile} ..."
    )


def _record_if_new(store: CertificateStore, path: Path, profile: Literal["client", "server"]) -> None:
    from certs.keys import load_certificates

    cert = load_certificates(path)[0]
    if store.find(cert.serial_number) is None:
        store.add(cert, profile)


@app.command("crl-sync")
def crl_sync(
    url: Annotated[
        str, typer.Option("--url", help="The cloud's CRL, e.g. https://cloud:8000/api/v1/pki/crl.")
    ],
    ca_file: Annotated[
        Path, typer.Option("--ca-file", help="The CA chain (verifies the CRL and an https URL).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The broker's crlfile.")],
    reload_pid: Annotated[
        Path | None, typer.Option("--reload-pid", help="Send SIGHUP to the pid in this file.")
    ] = None,
    reload_command: Annotated[
        str | None,
        typer.Option("--reload-command", help="Run this instead, e.g. 'systemctl restart mosquitto'."),
    ] = None,
    interval: Annotated[str, typer.Option("--interval", help="Time between rounds: 30s, 5m, 1h.")] = "5m",
    once: Annotated[bool, typer.Option("--once", help="One round, then exit (1 if it failed).")] = False,
) -> None:
    """Fetch the cloud's CRL, verify it, install it when newer and make the broker reload; loops until SIGTERM."""
    from certs import crl_sync as sync
    from fieldline.durations import parse_duration
    from fieldline.logs import setup_logging

    with _one_line_errors():
        if reload_pid is not None and reload_command is not None:
            raise CertsError("give either --reload-pid or --reload-command, not both")
        try:
            seconds = parse_duration(interval)
        except ValueError as exc:
            raise CertsError(f"--interval: {exc}") from None
        reload = (
            sync.signal_reload(reload_pid)
            if reload_pid is not None
            else sync.command_reload(reload_command)
            if reload_command is not None
            else None
        )
        if once:
            outcome = sync.sync_once(url, ca_file=ca_file, out=out, reload=reload)
            console.print(
                outcome.detail + (" and reloaded the broker" if outcome.installed and reload else "")
            )
            return
        setup_logging("info", "json")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        sync.run(url, ca_file=ca_file, out=out, reload=reload, interval=max(seconds, 1.0), stop=stop)
