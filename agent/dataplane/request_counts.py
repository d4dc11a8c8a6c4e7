"""Reads HAProxy's per-server counters every bucket into the request windows.

One admin socket exchange per read (``show info`` for the worker pid and DroppedLogs,
``show stat`` of every server); the deltas (agent/dataplane/server_counters.py) go into
the windows at the time of the read, under the server's version from the spec. A read
also keeps running totals for the agent's Prometheus counters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.dataplane.haproxy_output import parse_show_info, parse_show_stat
from agent.dataplane.model import DataPlaneSpec
from agent.dataplane.server_counters import CounterDeltas, ServerCount, per_instance
from agent.dataplane.windows import RequestWindows
from common.clock import Clock
from common.errors import LandlordError

__all__ = ["CounterReader", "RequestCounts"]

log = logging.getLogger(__name__)


class CounterReader(Protocol):
    """The one admin socket operation the counts need (``AdminSocket.run``)."""

    async def run(self, commands: Sequence[str]) -> list[str]: ...


class RequestCounts:
    """Exact request and error counts of one HAProxy, polled into ``windows``."""

    def __init__(self, admin: CounterReader, windows: RequestWindows,
                 spec: Callable[[], DataPlaneSpec], clock: Clock, interval_s: float,
                 sample_every: int = 1) -> None:
        self._admin = admin
        self._windows = windows
        self._spec = spec
        self._clock = clock
        self.interval_s = interval_s
        self.sample_every = sample_every
        """HAProxy logs one request in this many (latency samples; counts are exact)."""
        self._deltas = CounterDeltas()
        self.totals: dict[tuple[str, str], ServerCount] = {}
        """(unit, version) -> requests and errors counted since the agent started."""
        self.dropped_logs = 0
        """Log lines HAProxy could not deliver since the agent started (over reloads)."""
        self._dropped_seen: tuple[int, int] | None = None  # (worker pid, DroppedLogs)
        self._reading = asyncio.Lock()
        """One read at a time: an older reading applied after a newer one would look like
        a reset and count its requests again."""

    @property
    def requests(self) -> int:
        return sum(count.requests for count in self.totals.values())

    @property
    def sampled_lines(self) -> int:
        """Log lines the sampling picked (requests / n): what should reach the agent."""
        return self.requests // self.sample_every

    async def read(self) -> None:
        """One reading: counts since the previous one go into the windows."""
        async with self._reading:
            await self._read()

    async def _read(self) -> None:
        info_text, stat_text = await self._admin.run(["show info", "show stat -1 4 -1"])
        info = parse_show_info(info_text)
        try:
            worker, dropped = int(info["Pid"]), int(info.get("DroppedLogs", "0") or 0)
        except (KeyError, ValueError):
            log.debug("haproxy show info without a Pid: %r", info_text[:200])
            return
        self._count_dropped(worker, dropped)
        deltas = self._deltas.update(worker, parse_show_stat(stat_text))
        if not deltas:
            return
        spec = self._spec()
        backend_units = {backend: name for name, unit in spec.units.items()
                         for backend in unit.backends()}
        now = self._clock.now()
        for (unit, server), delta in per_instance(deltas, backend_units).items():
            version = spec.units[unit].version_map().get(server, "")
            self._windows.count(unit, version, server, delta.requests, delta.errors, now)
            key = (unit, version)
            self.totals[key] = self.totals.get(key, ServerCount()) + delta

    def _count_dropped(self, worker: int, dropped: int) -> None:
        if self._dropped_seen is not None:
            last_worker, last = self._dropped_seen
            self.dropped_logs += dropped - last if worker == last_worker and dropped >= last \
                else dropped
        self._dropped_seen = (worker, dropped)

    async def run(self) -> None:
        """Read every ``interval_s`` until cancelled; HAProxy not answering skips a read."""
        while True:
            try:
                await self.read()
            except LandlordError as exc:
                log.debug("cannot read haproxy's counters: %s", exc)
            await asyncio.sleep(self.interval_s)
