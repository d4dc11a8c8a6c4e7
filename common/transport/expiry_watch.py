"""The task both daemons run to warn before their own certificate expires.

It looks at the certificate the daemon uses (the one read at start or at the last good
reload, not whatever the file holds now), logs the notice ``common.cert_expiry`` decides
(WARNING: expires soon; ERROR: expired), and sleeps until the next check is due or
``recheck()`` is called (a reload). Without a certificate it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from common.cert_expiry import WARN_BEFORE, ExpiryNotice, Severity, expiry_notice, next_check
from common.clock import Clock
from common.errors import InvalidArgument
from common.pki import load_certificate

__all__ = ["ExpiryWatch"]

log = logging.getLogger(__name__)


class ExpiryWatch:
    def __init__(self, path: str, current: Callable[[], bytes | None], clock: Clock,
                 warn_before: timedelta = WARN_BEFORE) -> None:
        """``current``: the PEM of the certificate in use (None: no certificate)."""
        self._path = path
        self._current = current
        self._clock = clock
        self._warn_before = warn_before
        self._wake = asyncio.Event()

    def check(self) -> tuple[ExpiryNotice | None, timedelta]:
        """Log the notice due now, if any; returns it and when to check next."""
        pem = self._current()
        if not pem:
            return None, timedelta(days=1)
        now = datetime.fromtimestamp(self._clock.now(), UTC)
        try:
            cert = load_certificate(pem, self._path)
        except InvalidArgument as exc:  # cannot happen for a certificate in use; say so
            log.error("cannot check when %s expires: %s", self._path, exc)
            return None, timedelta(days=1)
        notice = expiry_notice(cert, self._path, now, self._warn_before)
        if notice is not None:
            level = logging.ERROR if notice.severity is Severity.ERROR else logging.WARNING
            log.log(level, "%s", notice, extra={
                "cert_file": self._path, "days_left": notice.days_left,
                "identity": str(notice.identity or ""),
                "not_after": notice.not_after.isoformat()})
        return notice, next_check(cert.not_valid_after_utc, now, self._warn_before)

    def recheck(self) -> None:
        """Check again now (the certificate was reloaded)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Check now, then whenever due, until ``stop`` (or cancelled)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            self._wake.clear()
            _, due = self.check()
            stopping = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({stopping, woken}, timeout=due.total_seconds(),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (stopping, woken):
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
