"""A small certificate authority for Landlord identities, in memory (no files here).

Keys are ECDSA P-256, signatures SHA-256. A leaf certificate carries its identity as one
``landlord://`` URI SAN (common/identity.py); coordinators also get DNS and IP SANs and the
serverAuth usage because they serve TLS. Revocation is a CRL signed by the CA.
Time is passed in (``now``), never read here. The CLI (coordinator/cli/certs.py) writes the
PEM files; operators may use their own PKI as long as it puts the same URI SANs in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import InvalidArgument
from common.identity import (
    IDENTITY_NAME_PATTERN,
    IDENTITY_NAME_RULE,
    Identity,
    Role,
    identity_from_uris,
)

__all__ = [
    "CLOCK_SKEW",
    "CertificateAuthority",
    "Issued",
    "LeafRequest",
    "cert_pem",
    "certificate_identity",
    "crl_pem",
    "issue",
    "issue_etcd_server",
    "issued_by",
    "key_pem",
    "load_certificate",
    "load_certificates",
    "load_crl",
    "load_private_key",
    "new_ca",
    "new_key",
    "renewal_request",
    "revoke",
]

CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this long before ``now``, so a peer whose clock lags accepts them."""
_ORGANIZATION = "Landlord"

PrivateKey = ec.EllipticCurvePrivateKey
_ISSUER_KEY_TYPES = (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)
"""CA key types whose CRLs are accepted: ours (P-256) and what operators' own PKIs use."""


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (the files are protected by their 0600 mode)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateAuthority:
    key: PrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class LeafRequest:
    """What to put in a leaf certificate besides its key."""

    identity: Identity
    days: int = 365
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_leaf(self.days, self.dns_names, self.ip_addresses)


def _check_leaf(days: int, dns_names: Sequence[str], ip_addresses: Sequence[str]) -> None:
    if days < 1:
        raise InvalidArgument(f"--days must be at least 1, not {days}", days=days)
    for ip in ip_addresses:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidArgument(f"{ip!r} is not an IP address", ip=ip) from None
    for name in dns_names:
        if not name or any(c.isspace() or c in "/:?#@" for c in name):
            raise InvalidArgument(f"{name!r} is not a DNS name", dns=name)


@dataclass(frozen=True)
class Issued:
    key: PrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)


def new_ca(name: str, now: datetime, days: int = 3650) -> CertificateAuthority:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    if days < 1:
        raise InvalidArgument(f"--days must be at least 1, not {days}", days=days)
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, cert)


def issue(ca: CertificateAuthority, request: LeafRequest, now: datetime,
          key: PrivateKey | None = None) -> Issued:
    """A leaf certificate for ``request.identity``, signed by ``ca``, with a new key by default."""
    identity = request.identity
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity.role is Role.COORDINATOR:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    return _leaf(ca, key or new_key(), str(identity.role), identity.name,
                 [x509.UniformResourceIdentifier(identity.uri)], usages, request.days,
                 request.dns_names, request.ip_addresses, now)


def issue_etcd_server(ca: CertificateAuthority, name: str, now: datetime, days: int = 365,
                      dns_names: Sequence[str] = ("localhost",),
                      ip_addresses: Sequence[str] = ("127.0.0.1",)) -> Issued:
    """A certificate for an etcd member's client port: DNS and IP SANs, serverAuth, and
    clientAuth too (etcd 3.4's JSON gateway dials its own gRPC port with it when
    --client-cert-auth is on). It names no ``landlord://`` identity, so Landlord's own
    services never take it for a caller."""
    if not IDENTITY_NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(f"etcd member name {name!r} is invalid: {IDENTITY_NAME_RULE}",
                              name=name)
    _check_leaf(days, dns_names, ip_addresses)
    return _leaf(ca, new_key(), "etcd", name, [],
                 [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                 days, dns_names, ip_addresses, now)


def _leaf(ca: CertificateAuthority, key: PrivateKey, unit: str, name: str,
          uris: list[x509.GeneralName], usages: list[x509.ObjectIdentifier], days: int,
          dns_names: Sequence[str], ip_addresses: Sequence[str], now: datetime) -> Issued:
    names = [*uris, *(x509.DNSName(n) for n in dns_names)]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    not_after = min(now + timedelta(days=days), ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def renewal_request(cert: x509.Certificate, days: int | None = None) -> LeafRequest:
    """The request that issues ``cert`` again: same identity and SANs, same lifetime by default."""
    identity = certificate_identity(cert)
    if identity is None:
        raise InvalidArgument("the certificate names no landlord:// identity; issue a new one")
    sans = _sans(cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc - CLOCK_SKEW
    return LeafRequest(
        identity=identity,
        days=days if days is not None else max(1, round(lifetime / timedelta(days=1))),
        dns_names=tuple(sans.get_values_for_type(x509.DNSName)) if sans else (),
        ip_addresses=tuple(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))
        if sans else (),
    )


def revoke(ca: CertificateAuthority, crl: x509.CertificateRevocationList | None,
           serials: Sequence[int], now: datetime, days: int = 365
           ) -> x509.CertificateRevocationList:
    """A new CRL: every entry of ``crl`` plus ``serials`` (revoked at ``now``), re-signed."""
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.cert.subject)
               .last_update(now).next_update(now + timedelta(days=days)))
    known: set[int] = set()
    for entry in crl or ():
        known.add(entry.serial_number)
        builder = builder.add_revoked_certificate(entry)
    for serial in serials:
        if serial in known:
            continue
        known.add(serial)
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(ca.key, hashes.SHA256())


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``ca``'s key signed ``cert`` (a name match alone proves nothing)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def certificate_identity(cert: x509.Certificate) -> Identity | None:
    """The certificate's landlord identity; None when it names none (InvalidArgument if bad)."""
    sans = _sans(cert)
    if sans is None:
        return None
    return identity_from_uris(sans.get_values_for_type(x509.UniformResourceIdentifier))


def load_certificate(data: bytes, what: str) -> x509.Certificate:
    certs = load_certificates(data, what)
    if len(certs) != 1:
        raise InvalidArgument(f"{what} holds {len(certs)} certificates, expected one")
    return certs[0]


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not a PEM certificate: {exc}") from None
    return certs


def load_private_key(data: bytes, what: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{what} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{what} is not an EC key (this tool makes P-256 keys)")
    return key


def load_crl(data: bytes, what: str, issuers: Sequence[x509.Certificate]
             ) -> x509.CertificateRevocationList:
    """A PEM CRL whose signature one of ``issuers`` verifies (else InvalidArgument)."""
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not a PEM CRL: {exc}") from None
    for issuer in issuers:
        key = issuer.public_key()
        if (crl.issuer == issuer.subject and isinstance(key, _ISSUER_KEY_TYPES)
                and crl.is_signature_valid(key)):
            return crl
    raise InvalidArgument(f"{what} is not signed by the CA")


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False)
