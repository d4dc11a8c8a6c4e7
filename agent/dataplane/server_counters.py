"""Exact request and error counts from HAProxy's own per-server counters (pure).

HAProxy counts every request it sends to a server, whatever happens to its log line, so
the request windows take their counts from ``show stat`` read every bucket and turned
into deltas here; latency comes from the (sampled) log lines.

A request and an error mean what they mean in :func:`agent.dataplane.request_log.is_error`,
in counter terms (checked against HAProxy 2.6):

- ``req_tot``: requests sent to the server (a request redispatched after failed connects
  counts once, on the server that got it);
- ``econ``: requests whose connection failed after every retry (HAProxy answers 503,
  termination ``sC``/``SC``): a request and an error of the last server tried;
- ``hrsp_5xx``: 5xx responses from the server;
- ``eresp``: responses that failed (server aborted, timed out, answered garbage;
  HAProxy answers 502/504, termination ``S``/``s``).

Counters start at zero in a new worker (a reload) and for a server deleted and added again
(a new ``sid``); such a reset is seen as a new worker pid, a new sid or a counter that went
down, and the delta is then the whole new reading. A server counts in every backend it is
in (the weighted one and a pin backend), added up per instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.dataplane.haproxy_output import StatRow

__all__ = ["CounterDeltas", "ServerCount", "per_instance", "row_count"]


@dataclass(frozen=True)
class ServerCount:
    requests: int = 0
    errors: int = 0

    def __add__(self, other: ServerCount) -> ServerCount:
        return ServerCount(self.requests + other.requests, self.errors + other.errors)

    @property
    def empty(self) -> bool:
        return not (self.requests or self.errors)


def row_count(row: StatRow) -> ServerCount:
    """A server's requests and errors so far (see the module docstring)."""
    return ServerCount(row.req_tot + row.econ, row.hrsp_5xx + row.eresp + row.econ)


def counter_delta(previous: int | None, current: int) -> int:
    """What a counter gained since ``previous`` (None or a higher value: it was reset, so
    all of ``current`` is new)."""
    if previous is None or current < previous:
        return max(0, current)
    return current - previous


_Key = tuple[str, str, int]  # backend, server, sid


class CounterDeltas:
    """Turns successive ``show stat`` readings of one HAProxy into per-server deltas."""

    def __init__(self) -> None:
        self._last: dict[_Key, ServerCount] = {}
        self._worker: int | None = None

    def update(self, worker: int, rows: Iterable[StatRow]) -> dict[tuple[str, str], ServerCount]:
        """(backend, server) -> what it counted since the previous reading by ``worker``.

        The first reading is a baseline (what came before the agent looked is not this
        agent's to report); after that a server not seen before, or in a new worker, counts
        from zero."""
        first = self._worker is None
        fresh = self._worker != worker
        self._worker = worker
        previous = {} if fresh else self._last
        current: dict[_Key, ServerCount] = {}
        deltas: dict[tuple[str, str], ServerCount] = {}
        for row in rows:
            key = (row.backend, row.server, row.sid)
            count = current[key] = row_count(row)
            if first:
                continue
            before = previous.get(key)
            reset = before is not None and (
                count.requests < before.requests or count.errors < before.errors)
            if reset:
                before = None
            delta = ServerCount(
                counter_delta(before.requests if before else None, count.requests),
                counter_delta(before.errors if before else None, count.errors))
            if not delta.empty:
                deltas[(row.backend, row.server)] = (
                    deltas.get((row.backend, row.server), ServerCount()) + delta)
        self._last = current
        return deltas


def per_instance(
    deltas: Mapping[tuple[str, str], ServerCount], backend_units: Mapping[str, str]
) -> dict[tuple[str, str], ServerCount]:
    """(unit, server) -> the deltas of all the unit's backends added up (backends of no
    known unit, e.g. a unit being removed, are left out)."""
    out: dict[tuple[str, str], ServerCount] = {}
    for (backend, server), delta in sorted(deltas.items()):
        unit = backend_units.get(backend)
        if unit is None:
            continue
        out[(unit, server)] = out.get((unit, server), ServerCount()) + delta
    return out
