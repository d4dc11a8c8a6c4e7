"""Injected clocks."""

from __future__ import annotations

import pytest

from common.clock import Clock, FakeClock, SystemClock
from common.errors import InvalidArgument


def test_fake_clock_moves_only_when_advanced() -> None:
    clock = FakeClock()
    assert clock.now() == 1_700_000_000.0
    start_mono = clock.monotonic()
    clock.advance(2.5)
    assert clock.now() == 1_700_000_002.5
    assert clock.monotonic() == start_mono + 2.5


def test_fake_clock_refuses_to_go_back() -> None:
    clock = FakeClock(start=10.0)
    with pytest.raises(InvalidArgument, match="cannot go back"):
        clock.advance(-1)
    assert clock.now() == 10.0


def test_system_clock_satisfies_the_protocol_and_is_monotonic() -> None:
    clock: Clock = SystemClock()
    first = clock.monotonic()
    assert clock.monotonic() >= first
    assert clock.now() > 1_600_000_000
