"""Shared test helpers: polling instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class EventuallyTimeout(AssertionError):
    """The condition never held within the timeout; carries the last failure."""


def eventually(
    check: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Call ``check`` until it returns a truthy value without raising.

    Returns that value. An ``AssertionError`` or any exception raised by
    ``check`` counts as "not yet"; the last one is chained on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last_value = value
            last_exc = None
        except Exception as exc:  # the condition is not true yet
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = (
                f"last value {last_value!r}" if last_exc is None else f"last error {last_exc!r}"
            )
            raise EventuallyTimeout(
                f"condition not met within {timeout:.1f}s: {message or check!r} ({detail})"
            ) from last_exc
        time.sleep(interval)


async def async_eventually(
    check: Callable[[], Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Async form of :func:`eventually` for coroutine checks."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = await check()
            if value:
                return value
            last_value = value
            last_exc = None
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = (
                f"last value {last_value!r}" if last_exc is None else f"last error {last_exc!r}"
            )
            raise EventuallyTimeout(
                f"condition not met within {timeout:.1f}s: {message or check!r} ({detail})"
            ) from last_exc
        await asyncio.sleep(interval)
