"""`landlord certs`: a small CA for Landlord identities (docs/security.md).

``init`` makes a CA directory, ``issue`` a key and certificate for one identity, ``revoke``
puts a certificate on the CRL, ``renew`` issues a certificate again with a new key. The files
are plain PEM, so an operator may replace any of them by their own PKI's.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from common.errors import FailedPrecondition, InvalidArgument
from common.identity import Identity, Role
from common.pki import (
    LeafRequest,
    certificate_identity,
    crl_pem,
    issue,
    issue_etcd_server,
    issued_by,
    load_certificate,
    renewal_request,
    revoke,
)
from coordinator.pki_files import KEY_MODE, PUBLIC_MODE, CaFiles, read_file, write_file

__all__ = ["app"]

app = typer.Typer(help="Certificates: a CA, identities, revocation.", no_args_is_help=True)

CaDir = Annotated[
    Path, typer.Option("--ca-dir", envvar="LANDLORD_CA_DIR", help="The CA directory.")
]
Force = Annotated[bool, typer.Option("--force", help="Replace existing files.")]


class Kind(StrEnum):
    """What `certs issue` makes; `agent` issues a host identity."""

    COORDINATOR = "coordinator"
    AGENT = "agent"
    ADMIN = "admin"
    VIEWER = "viewer"


ROLE_OF_KIND = {Kind.COORDINATOR: Role.COORDINATOR, Kind.AGENT: Role.HOST,
                Kind.ADMIN: Role.ADMIN, Kind.VIEWER: Role.VIEWER}
DEFAULT_COORDINATOR_SANS = (("localhost",), ("127.0.0.1",))


def _now() -> datetime:
    return datetime.now(UTC)


def build_leaf_request(kind: Kind, name: str, apartments: str | None, days: int,
                       dns: list[str], ips: list[str]) -> LeafRequest:
    """The request `certs issue` makes; coordinators get localhost SANs unless told."""
    scope = None
    if apartments is not None:
        if kind not in (Kind.ADMIN, Kind.VIEWER):
            raise InvalidArgument(f"--apartments applies to admin and viewer, not {kind}",
                                  field="--apartments")
        scope = frozenset(a.strip() for a in apartments.split(","))
    identity = Identity(ROLE_OF_KIND[kind], name, scope)
    if kind is Kind.COORDINATOR and not dns and not ips:
        dns, ips = list(DEFAULT_COORDINATOR_SANS[0]), list(DEFAULT_COORDINATOR_SANS[1])
    return LeafRequest(identity, days, tuple(dns), tuple(ips))


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="Where to make the CA (created).")],
    name: Annotated[str | None, typer.Option(
        help="The CA's common name (default: 'Landlord CA' and a random suffix, so two CAs "
        "never share a name).", show_default=False)] = None,
    days: Annotated[int, typer.Option(help="How long the CA is valid.")] = 3650,
    force: Force = False,
) -> None:
    """Make a CA: ca.pem, ca.key (0600) and an empty crl.pem."""
    files = CaFiles(directory)
    if files.key.exists() and not force:
        raise FailedPrecondition(f"{files.key} exists; a CA is there already (--force replaces "
                                 "it and invalidates every certificate it issued)")
    files.create(name or f"Landlord CA {secrets.token_hex(4)}", _now(), days)
    typer.echo(f"CA written: {files.cert} (give to every daemon and CLI), {files.key} (secret)")


@app.command("issue", no_args_is_help=True)
def issue_cert(
    kind: Annotated[Kind, typer.Argument(help="coordinator | agent | admin | viewer")],
    name: Annotated[str, typer.Argument(help="Coordinator id, host id, or person's name.")],
    ca_dir: CaDir,
    apartments: Annotated[str | None, typer.Option(
        help="Admin/viewer only: comma-separated apartments this identity is limited to.",
        show_default=False)] = None,
    days: Annotated[int, typer.Option(help="How long the certificate is valid.")] = 365,
    dns: Annotated[list[str] | None, typer.Option(
        "--dns", help="DNS name SAN (repeat); coordinators default to localhost.")] = None,
    ip: Annotated[list[str] | None, typer.Option(
        "--ip", help="IP SAN (repeat); coordinators default to 127.0.0.1.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write OUT.pem and OUT.key (default: CA_DIR/<role>-<name>).",
        show_default=False)] = None,
    force: Force = False,
) -> None:
    """Issue a key and certificate for one identity."""
    request = build_leaf_request(kind, name, apartments, days, list(dns or ()), list(ip or ()))
    files = CaFiles(ca_dir)
    ca = files.load()
    if out is None:
        cert_path, key_path = files.leaf(str(request.identity.role), name)
    else:
        cert_path, key_path = out.with_name(out.name + ".pem"), out.with_name(out.name + ".key")
    for path in (cert_path, key_path):
        if path.exists() and not force:
            raise FailedPrecondition(f"{path} exists; pass --force to replace it")
    issued = issue(ca, request, _now())
    files.write_leaf(issued, cert_path, key_path)
    typer.echo(f"{request.identity.uri}: {cert_path} {key_path} "
               f"(valid until {issued.cert.not_valid_after_utc:%Y-%m-%d})")


@app.command("issue-etcd", no_args_is_help=True)
def issue_etcd(
    name: Annotated[str, typer.Argument(help="The etcd member's name.")],
    ca_dir: CaDir,
    days: Annotated[int, typer.Option(help="How long the certificate is valid.")] = 365,
    dns: Annotated[list[str] | None, typer.Option(
        "--dns", help="DNS name SAN (repeat; default localhost).")] = None,
    ip: Annotated[list[str] | None, typer.Option(
        "--ip", help="IP SAN (repeat; default 127.0.0.1).")] = None,
    force: Force = False,
) -> None:
    """Issue etcd's server certificate (CA_DIR/etcd-NAME.pem and .key; no Landlord identity)."""
    files = CaFiles(ca_dir)
    cert_path, key_path = files.leaf("etcd", name)
    for path in (cert_path, key_path):
        if path.exists() and not force:
            raise FailedPrecondition(f"{path} exists; pass --force to replace it")
    issued = issue_etcd_server(files.load(), name, _now(), days, dns or ("localhost",),
                               ip or ("127.0.0.1",))
    write_file(key_path, issued.key_pem, KEY_MODE)
    write_file(cert_path, issued.cert_pem, PUBLIC_MODE)
    typer.echo(f"etcd {name}: {cert_path} {key_path} "
               f"(valid until {issued.cert.not_valid_after_utc:%Y-%m-%d})")


@app.command("revoke", no_args_is_help=True)
def revoke_cert(
    cert: Annotated[Path, typer.Argument(help="The certificate (PEM) to revoke.")],
    ca_dir: CaDir,
) -> None:
    """Put a certificate on the CA's CRL (crl.pem); daemons refuse it once they load the CRL."""
    files = CaFiles(ca_dir)
    ca = files.load()
    leaf = load_certificate(read_file(cert), str(cert))
    if not issued_by(leaf, ca.cert):
        raise FailedPrecondition(f"{cert} was not issued by the CA in {ca_dir}")
    crl = revoke(ca, files.load_crl(ca), [leaf.serial_number], _now())
    write_file(files.crl, crl_pem(crl), PUBLIC_MODE)
    who = certificate_identity(leaf)
    typer.echo(f"revoked {who or cert} (serial {leaf.serial_number:x}); {files.crl} updated")


@app.command("renew", no_args_is_help=True)
def renew_cert(
    cert: Annotated[Path, typer.Argument(help="The certificate (PEM) to issue again.")],
    ca_dir: CaDir,
    key: Annotated[Path | None, typer.Option(
        help="Where its key is (default: CERT with .key).", show_default=False)] = None,
    days: Annotated[int | None, typer.Option(
        help="Lifetime (default: the old certificate's).", show_default=False)] = None,
) -> None:
    """Issue a certificate again (same identity and SANs, a new key), replacing both files."""
    files = CaFiles(ca_dir)
    ca = files.load()
    old = load_certificate(read_file(cert), str(cert))
    if not issued_by(old, ca.cert):
        raise FailedPrecondition(f"{cert} was not issued by the CA in {ca_dir}")
    request = renewal_request(old, days)
    issued = issue(ca, request, _now())
    key_path = key or cert.with_suffix(".key")
    files.write_leaf(issued, cert, key_path)
    typer.echo(f"{request.identity.uri}: renewed {cert} {key_path} "
               f"(valid until {issued.cert.not_valid_after_utc:%Y-%m-%d}); the old one stays "
               "valid until it expires unless revoked")

