"""Waiting for a draining server's sessions to end (the loop behind
``DataPlane.drain_and_remove``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common.clock import Clock

__all__ = ["DrainResult", "wait_drained"]


@dataclass(frozen=True)
class DrainResult:
    server: str
    drained: bool
    """True when sessions reached zero; False when the timeout cut them off."""
    waited_s: float


async def wait_drained(
    sessions: Callable[[], Awaitable[int]], clock: Clock, limit_s: float, poll_s: float
) -> tuple[bool, float]:
    """Poll ``sessions`` (current plus queued) until zero or ``limit_s``: (drained, waited)."""
    started = clock.monotonic()
    while True:
        if await sessions() == 0:
            return True, clock.monotonic() - started
        if clock.monotonic() - started >= limit_s:
            return False, clock.monotonic() - started
        await asyncio.sleep(poll_s)
