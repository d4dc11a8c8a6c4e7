"""Following a record the leader keeps in etcd (a host drain, a unit rebalance) until it
ends: one status read a second, a line (or a JSON document) per change, a leader change on
the way ridden out (any coordinator answers the status from its cache)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import typer
from rich.text import Text

from coordinator.cli.client import AdminClient, CallFailed
from coordinator.cli.context import settings_of
from coordinator.cli.output import print_json_line, print_rich

__all__ = ["RIDE_OUT", "follow_status"]

RIDE_OUT = 60.0
"""Seconds the follow keeps asking while no coordinator answers (a leader change)."""


async def follow_status(ctx: typer.Context, method: str, request: Any, what: str,
                        lines_of: Callable[[Any], list[str]], running: Callable[[Any], bool],
                        as_json: bool) -> Any:
    """Ask ``method`` every second, printing each change, until ``running`` is false;
    returns the last status."""
    shown: list[str] = []
    unanswered_since = 0.0
    async with AdminClient(settings_of(ctx).client) as client:
        while True:
            try:
                status = await client.unary(method, request, what)
                unanswered_since = 0.0
            except CallFailed as err:
                if err.code != "UNAVAILABLE":
                    raise
                unanswered_since = unanswered_since or time.monotonic()
                if time.monotonic() - unanswered_since > RIDE_OUT:
                    raise
                await asyncio.sleep(1.0)
                continue
            lines = lines_of(status)
            if lines != shown:
                shown = lines
                if as_json:
                    print_json_line(status)
                else:
                    print_rich(Text("\n".join(lines)))
            if not running(status):
                return status
            await asyncio.sleep(1.0)
