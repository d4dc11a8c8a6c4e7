"""When a daemon's own certificate runs out, and what it says about it.

Both daemons check their own certificate at start and then again and again: quietly while
more than ``WARN_BEFORE`` remains (once a day, so a certificate entering the window is
noticed), a WARNING once a day inside it, every hour in the last ``URGENT_BEFORE``, and an
ERROR every hour once it has expired (peers refuse it from then on). Pure: the certificate
and the time are passed in (common/transport/expiry_watch.py reads the file and logs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography import x509

from common.errors import InvalidArgument
from common.identity import Identity
from common.pki import certificate_identity

__all__ = [
    "URGENT_BEFORE",
    "WARN_BEFORE",
    "ExpiryNotice",
    "Severity",
    "expiry_notice",
    "next_check",
]

WARN_BEFORE = timedelta(days=30)
"""A certificate with less than this left is warned about."""
URGENT_BEFORE = timedelta(days=7)
"""Inside this, and once expired, the warning repeats every URGENT_EVERY."""
DAILY = timedelta(days=1)
URGENT_EVERY = timedelta(hours=1)


class Severity(StrEnum):
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class ExpiryNotice:
    """What to log about a certificate that expires soon or has expired."""

    severity: Severity
    path: str
    identity: Identity | None
    not_after: datetime
    remaining: timedelta
    """Negative once expired."""

    @property
    def days_left(self) -> int:
        """Whole days left (0 in the last day; negative: days since it expired)."""
        return self.remaining.days if self.remaining >= timedelta(0) else \
            -((-self.remaining).days)

    def __str__(self) -> str:
        who = str(self.identity) if self.identity else "no landlord:// identity"
        when = f"{self.not_after:%Y-%m-%d %H:%M} UTC"
        renew = "renew it (landlord certs renew) and reload the daemon (SIGHUP)"
        if self.severity is Severity.ERROR:
            return (f"certificate {self.path} ({who}) EXPIRED {_span(-self.remaining)} ago, "
                    f"on {when}: peers refuse it; {renew}")
        return (f"certificate {self.path} ({who}) expires in {_span(self.remaining)}, "
                f"on {when}; {renew}")


def expiry_notice(cert: x509.Certificate, path: str, now: datetime,
                  warn_before: timedelta = WARN_BEFORE) -> ExpiryNotice | None:
    """The notice due for ``cert`` at ``now``; None while more than ``warn_before`` remains."""
    if warn_before < timedelta(0):
        raise InvalidArgument(f"warn_before must not be negative, not {warn_before}")
    remaining = cert.not_valid_after_utc - now
    if remaining > warn_before:
        return None
    try:
        identity = certificate_identity(cert)
    except InvalidArgument:
        identity = None
    severity = Severity.ERROR if remaining < timedelta(0) else Severity.WARNING
    return ExpiryNotice(severity, path, identity, cert.not_valid_after_utc, remaining)


def next_check(not_after: datetime, now: datetime, warn_before: timedelta = WARN_BEFORE
               ) -> timedelta:
    """How long until the certificate should be looked at again (always > 0)."""
    remaining = not_after - now
    every = URGENT_EVERY if remaining <= URGENT_BEFORE else DAILY
    # wake at the moments the notice changes: entering the window, the urgent part, expiry
    for edge in (remaining - warn_before, remaining - URGENT_BEFORE, remaining):
        if timedelta(0) < edge < every:
            every = edge
    return every


def _span(delta: timedelta) -> str:
    """"2 days 23 hours", "5 hours", "12 minutes" (rounded down)."""
    hours = delta.seconds // 3600
    if delta.days:
        return _count(delta.days, "day") + (f" {_count(hours, 'hour')}" if hours else "")
    if hours:
        return _count(hours, "hour")
    return _count(max(1, delta.seconds // 60), "minute")


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"
