"""Injected time: logic asks a Clock, never ``time.time()`` directly."""

from __future__ import annotations

import time
from typing import Protocol

from common.errors import InvalidArgument

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """Source of time for pure logic and daemons."""

    def now(self) -> float:
        """Wall-clock time in epoch seconds (for records people read)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes back (for intervals)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; wall and monotonic time move together."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._monotonic = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise InvalidArgument(
                f"a clock cannot go back: advance({seconds}) needs seconds >= 0", seconds=seconds
            )
        self._now += seconds
        self._monotonic += seconds
