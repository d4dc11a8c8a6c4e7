"""When a daemon warns about its own certificate, and what it says."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.cert_expiry import (
    URGENT_BEFORE,
    WARN_BEFORE,
    Severity,
    expiry_notice,
    next_check,
)
from common.clock import FakeClock
from common.errors import InvalidArgument, LandlordError
from common.identity import Identity, Role
from common.pki import CertificateAuthority, LeafRequest, cert_pem, issue, new_ca
from common.transport import ClientCertificates, ExpiryWatch, TlsSettings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOST = Identity(Role.HOST, "h1")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return new_ca("test CA", NOW - timedelta(days=1), days=3650)


def leaf(ca: CertificateAuthority, days: int) -> tuple[bytes, bytes]:
    issued = issue(ca, LeafRequest(HOST, days=days), NOW)
    return issued.cert_pem, issued.key_pem


def test_quiet_until_the_window_then_warning_then_error(ca: CertificateAuthority) -> None:
    cert = issue(ca, LeafRequest(HOST, days=40), NOW).cert
    assert expiry_notice(cert, "/etc/h1.pem", NOW) is None
    assert expiry_notice(cert, "/etc/h1.pem", NOW + timedelta(days=9, hours=23)) is None
    notice = expiry_notice(cert, "/etc/h1.pem", NOW + timedelta(days=37))
    assert notice is not None and notice.severity is Severity.WARNING
    assert notice.days_left == 3 and notice.identity == HOST
    text = str(notice)
    assert text.startswith("certificate /etc/h1.pem (host/h1) expires in 3 days, on 2026-07-11")
    assert "landlord certs renew" in text
    expired = expiry_notice(cert, "/etc/h1.pem", NOW + timedelta(days=41))
    assert expired is not None and expired.severity is Severity.ERROR
    assert expired.days_left == -1
    assert str(expired).startswith("certificate /etc/h1.pem (host/h1) EXPIRED 1 day ago")
    # a wider window warns earlier; a negative one is a mistake
    assert expiry_notice(cert, "x", NOW, warn_before=timedelta(days=60)) is not None
    with pytest.raises(InvalidArgument):
        expiry_notice(cert, "x", NOW, warn_before=timedelta(days=-1))


def test_checks_daily_then_hourly_and_at_each_edge() -> None:
    not_after = NOW + timedelta(days=100)
    assert next_check(not_after, NOW) == timedelta(days=1)
    # the window opens in 6 hours: look then, not a day later
    assert next_check(not_after, not_after - WARN_BEFORE - timedelta(hours=6)) == \
        timedelta(hours=6)
    assert next_check(not_after, not_after - timedelta(days=10)) == timedelta(days=1)
    assert next_check(not_after, not_after - URGENT_BEFORE) == timedelta(hours=1)
    assert next_check(not_after, not_after - timedelta(minutes=20)) == timedelta(minutes=20)
    assert next_check(not_after, not_after + timedelta(days=3)) == timedelta(hours=1)


@given(st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(days=4000)),
       st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=365)))
def test_the_next_check_comes_soon_and_never_skips_an_edge(remaining: timedelta,
                                                             warn: timedelta) -> None:
    due = next_check(NOW + remaining, NOW, warn)
    assert timedelta(0) < due <= timedelta(days=1)
    if remaining <= URGENT_BEFORE:
        assert due <= timedelta(hours=1)
    for edge in (remaining - warn, remaining - URGENT_BEFORE, remaining):
        assert not timedelta(0) < edge < due  # no notice change is slept through


def test_the_watch_logs_the_certificate_in_use(ca: CertificateAuthority,
                                               caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(NOW.timestamp())
    current: list[bytes | None] = [leaf(ca, 3)[0]]
    watch = ExpiryWatch("/etc/h1.pem", lambda: current[0], clock)
    with caplog.at_level(logging.INFO, logger="common.transport.expiry_watch"):
        notice, due = watch.check()
    assert notice is not None and due == timedelta(hours=1)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "certificate /etc/h1.pem (host/h1) expires in 3 days, on 2026-06-04 12:00 UTC; "
        "renew it (landlord certs renew) and reload the daemon (SIGHUP)")
    assert record.days_left == 3  # type: ignore[attr-defined]
    caplog.clear()
    clock.advance(2 * 86400 + 7 * 3600)
    with caplog.at_level(logging.INFO, logger="common.transport.expiry_watch"):
        watch.check()
    assert "expires in 17 hours" in caplog.records[0].getMessage()
    caplog.clear()
    clock.advance(2 * 86400)
    with caplog.at_level(logging.INFO, logger="common.transport.expiry_watch"):
        watch.check()
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    current[0] = leaf(ca, 365)[0]  # renewed and reloaded: quiet
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="common.transport.expiry_watch"):
        assert watch.check()[0] is None
        current[0] = None  # no certificate at all
        assert watch.check() == (None, timedelta(days=1))
    assert caplog.records == []


async def test_the_watch_runs_until_stopped_and_rechecks_on_reload(
        ca: CertificateAuthority) -> None:
    checks: list[int] = []
    pem = leaf(ca, 3)[0]

    def current() -> bytes:
        checks.append(1)
        return pem

    watch = ExpiryWatch("h1.pem", current, FakeClock(NOW.timestamp()))
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    await asyncio.sleep(0.05)
    assert len(checks) == 1  # at start; the next is an hour away
    watch.recheck()
    await asyncio.sleep(0.05)
    assert len(checks) == 2
    stop.set()
    await asyncio.wait_for(task, 2)


def test_client_certificates_keep_the_last_good_files(ca: CertificateAuthority,
                                                      tmp_path: Path) -> None:
    cert, key = leaf(ca, 30)
    (tmp_path / "ca.pem").write_bytes(cert_pem(ca.cert))
    (tmp_path / "h1.pem").write_bytes(cert)
    (tmp_path / "h1.key").write_bytes(key)
    tls = TlsSettings(ca_file=str(tmp_path / "ca.pem"), cert_file=str(tmp_path / "h1.pem"),
                      key_file=str(tmp_path / "h1.key"))
    certificates = ClientCertificates(tls)
    assert certificates.certificate == cert
    renewed, renewed_key = leaf(ca, 60)
    (tmp_path / "h1.pem").write_bytes(renewed)  # the key is not renewed yet: refused
    with pytest.raises(InvalidArgument, match="is not the key of"):
        certificates.reload()
    assert certificates.certificate == cert
    (tmp_path / "h1.key").write_bytes(b"garbage")
    with pytest.raises(InvalidArgument, match="not an unencrypted PEM private key"):
        certificates.reload()
    (tmp_path / "h1.key").unlink()
    with pytest.raises(LandlordError, match="cannot read the client's TLS files"):
        certificates.reload()
    (tmp_path / "h1.key").write_bytes(renewed_key)
    (tmp_path / "ca.pem").write_bytes(b"not a CA")
    with pytest.raises(InvalidArgument, match="not a PEM certificate"):
        certificates.reload()
    (tmp_path / "ca.pem").write_bytes(cert_pem(ca.cert))
    certificates.reload()
    assert certificates.certificate == renewed
    assert certificates.credentials() is not None

