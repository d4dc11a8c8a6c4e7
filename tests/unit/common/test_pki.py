"""The in-memory CA and the peer check: what is issued, and every reason a peer is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from common.errors import InvalidArgument
from common.identity import Identity, Role
from common.pki import (
    CertificateAuthority,
    LeafRequest,
    certificate_identity,
    crl_pem,
    issue,
    load_crl,
    new_ca,
    renewal_request,
    revoke,
)
from common.pki_check import Refusal, RefusalKind, Trust, check_peer

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
VIEWER = Identity(Role.VIEWER, "bob", frozenset({"shop"}))


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return new_ca("test CA", NOW, days=3650)


def test_issued_certificate_carries_identity_and_sans(ca: CertificateAuthority) -> None:
    request = LeafRequest(Identity(Role.COORDINATOR, "c1"), days=30,
                          dns_names=("localhost",), ip_addresses=("127.0.0.1", "::1"))
    cert = issue(ca, request, NOW).cert
    assert certificate_identity(cert) == Identity(Role.COORDINATOR, "c1")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    cert.verify_directly_issued_by(ca.cert)
    # a renewal asks for the same identity, SANs and lifetime
    assert renewal_request(cert) == request


def test_leaf_never_outlives_its_ca() -> None:
    short = new_ca("short", NOW, days=10)
    cert = issue(short, LeafRequest(VIEWER, days=365), NOW).cert
    assert cert.not_valid_after_utc == short.cert.not_valid_after_utc


def test_people_get_client_auth_only(ca: CertificateAuthority) -> None:
    cert = issue(ca, LeafRequest(VIEWER), NOW).cert
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"days": 0}, "--days"),
    ({"ip_addresses": ("300.1.1.1",)}, "not an IP address"),
    ({"dns_names": ("a b",)}, "not a DNS name"),
])
def test_bad_requests(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        LeafRequest(VIEWER, **kwargs)  # type: ignore[arg-type]


def test_peer_accepted(ca: CertificateAuthority) -> None:
    pem = issue(ca, LeafRequest(VIEWER), NOW).cert_pem
    assert check_peer(pem, Trust((ca.cert,)), NOW) == VIEWER
    assert check_peer(pem.decode(), Trust((ca.cert,)), NOW) == VIEWER


def refused(result: Identity | Refusal) -> Refusal:
    assert isinstance(result, Refusal), result
    return result


def test_peer_refusals(ca: CertificateAuthority) -> None:
    trust = Trust((ca.cert,))
    pem = issue(ca, LeafRequest(VIEWER, days=10), NOW).cert_pem
    assert refused(check_peer(None, trust, NOW)).kind is RefusalKind.NO_CERTIFICATE
    assert refused(check_peer(b"junk", trust, NOW)).kind is RefusalKind.UNREADABLE
    expired = refused(check_peer(pem, trust, NOW + timedelta(days=11)))
    assert expired.kind is RefusalKind.EXPIRED and expired.identity == VIEWER
    assert str(expired).startswith("viewer/bob (apartments shop): expired (on ")
    early = refused(check_peer(pem, trust, NOW - timedelta(hours=1)))
    assert early.kind is RefusalKind.NOT_YET_VALID
    other = new_ca("other CA", NOW)
    assert refused(check_peer(pem, Trust((other.cert,)), NOW)).kind is RefusalKind.UNTRUSTED
    # a bundle with the right CA among others is fine
    assert check_peer(pem, Trust((other.cert, ca.cert)), NOW) == VIEWER


def test_no_identity_refused(ca: CertificateAuthority) -> None:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([])).issuer_name(ca.cert.subject)
               .public_key(ca.key.public_key()).serial_number(1)
               .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1)))
    plain = builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    assert refused(check_peer(plain, Trust((ca.cert,)), NOW)).kind is RefusalKind.NO_IDENTITY
    two = builder.add_extension(x509.SubjectAlternativeName([
        x509.UniformResourceIdentifier("landlord://admin/a"),
        x509.UniformResourceIdentifier("landlord://admin/b")]), critical=False)
    pem = two.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    refusal = refused(check_peer(pem, Trust((ca.cert,)), NOW))
    assert refusal.kind is RefusalKind.NO_IDENTITY and "more than one" in refusal.detail


def test_revocation(ca: CertificateAuthority) -> None:
    first = issue(ca, LeafRequest(VIEWER), NOW)
    second = issue(ca, LeafRequest(Identity(Role.HOST, "h1")), NOW)
    crl = revoke(ca, None, [first.cert.serial_number], NOW)
    crl = revoke(ca, crl, [second.cert.serial_number, first.cert.serial_number], NOW)
    assert sorted(e.serial_number for e in crl) == sorted(
        [first.cert.serial_number, second.cert.serial_number])
    loaded = load_crl(crl_pem(crl), "crl.pem", [ca.cert])
    trust = Trust((ca.cert,), (loaded,))
    refusal = refused(check_peer(first.cert_pem, trust, NOW))
    assert refusal.kind is RefusalKind.REVOKED and refusal.identity == VIEWER
    fresh = issue(ca, LeafRequest(VIEWER), NOW)
    assert check_peer(fresh.cert_pem, trust, NOW) == VIEWER


def test_crl_of_another_ca_refused(ca: CertificateAuthority) -> None:
    other = new_ca("other CA", NOW)
    with pytest.raises(InvalidArgument, match="not signed by the CA"):
        load_crl(crl_pem(revoke(other, None, [], NOW)), "crl.pem", [ca.cert])
    with pytest.raises(InvalidArgument, match="not a PEM CRL"):
        load_crl(b"nope", "crl.pem", [ca.cert])
