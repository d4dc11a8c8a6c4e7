"""The checks grpcio cannot do: revocation, and who the peer is.

grpcio verifies the chain and the validity period at the handshake but has no CRL option
and knows nothing of Landlord identities. ``check_peer`` takes the peer certificate PEM a
server interceptor finds in ``context.auth_context()['x509_pem_cert']`` and answers the
caller's Identity or a Refusal saying why not. It also checks time itself (with the clock
it is given) because a stream opened before a certificate expired lives on after it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from cryptography import x509

from common.errors import InvalidArgument
from common.identity import Identity
from common.pki import certificate_identity, issued_by

__all__ = ["Refusal", "RefusalKind", "Trust", "check_peer"]


class RefusalKind(StrEnum):
    NO_CERTIFICATE = "no client certificate"
    UNREADABLE = "unreadable certificate"
    UNTRUSTED = "not issued by the Landlord CA"
    NOT_YET_VALID = "not yet valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    NO_IDENTITY = "no landlord:// identity"


@dataclass(frozen=True)
class Refusal:
    """Why a peer is not accepted; ``identity`` is what it claimed, when it claimed one."""

    kind: RefusalKind
    detail: str = ""
    identity: Identity | None = None

    def __str__(self) -> str:
        who = f"{self.identity}: " if self.identity else ""
        return f"{who}{self.kind}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Trust:
    """The CA certificates that issue Landlord identities, and their CRLs (may be empty)."""

    cas: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.cas:
            raise InvalidArgument("trust needs at least one CA certificate")


def check_peer(pem: bytes | str | None, trust: Trust, now: datetime) -> Identity | Refusal:
    """The peer's Identity, or why it is refused (pure: no I/O, time passed in)."""
    if not pem:
        return Refusal(RefusalKind.NO_CERTIFICATE)
    data = pem.encode() if isinstance(pem, str) else pem
    read = _read(data, trust.cas)
    if isinstance(read, Refusal):
        return read
    cert, identity, issuer = read
    if now < cert.not_valid_before_utc:
        return Refusal(RefusalKind.NOT_YET_VALID,
                       f"valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC", identity)
    if now > cert.not_valid_after_utc:
        return Refusal(RefusalKind.EXPIRED,
                       f"on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC", identity)
    for crl in trust.crls:
        if crl.issuer != issuer.subject:
            continue
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            return Refusal(RefusalKind.REVOKED,
                           f"serial {cert.serial_number:x} on "
                           f"{entry.revocation_date_utc:%Y-%m-%d %H:%M:%S} UTC", identity)
    if identity is None:
        return Refusal(RefusalKind.NO_IDENTITY)
    return identity


@functools.lru_cache(maxsize=4096)
def _read(data: bytes, cas: tuple[x509.Certificate, ...]
          ) -> tuple[x509.Certificate, Identity | None, x509.Certificate] | Refusal:
    """The certificate, the identity it names and the CA that signed it, or why not.

    Remembered per certificate and CA set (parsing and the signature check are the costly
    part, and every call and stream of a peer presents the same certificate); what
    depends on the time or the CRLs is checked on every call."""
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        return Refusal(RefusalKind.UNREADABLE, str(exc))
    try:
        identity = certificate_identity(cert)
    except InvalidArgument as exc:
        return Refusal(RefusalKind.NO_IDENTITY, exc.message)
    issuer = _issuer(cert, cas)
    if issuer is None:
        return Refusal(RefusalKind.UNTRUSTED, f"issuer {cert.issuer.rfc4514_string()}", identity)
    return cert, identity, issuer


def _issuer(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    return next((ca for ca in cas if issued_by(cert, ca)), None)

