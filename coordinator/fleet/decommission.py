"""Decommissioning a drained host: it leaves the cluster and its records leave etcd.

Only a host that is cordoned, has nothing placed on it and no drain running may go (the
refusal names what remains). The removal is the one a forgotten lost host gets
(``HostRecords.forget``: host record, allocation ledger, liveness key and lease, leftover
status records), in one fenced transaction with the host's drain record, a
``{p}/decommissioned/{host_id}`` mark and a ``host.decommissioned`` event. Its stream, if
open, is closed.

An agent of a decommissioned host that comes back is refused at registration
(FAILED_PRECONDITION, with ``refusal`` as the message, which the agent logs as an error):
the machine was taken out on purpose, so it must not return to placement by reconnecting.
To bring the machine back, start its agent with a new host id.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from common.clock import Clock
from common.errors import FailedPrecondition, NotFound
from common.event_types import EventType
from coordinator.fleet.drain_plan import DrainState
from coordinator.fleet.drains import drain_of
from coordinator.fleet.host_records import HostRecords
from coordinator.fleet.sessions import Fleet
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import HostRecord
from coordinator.state.store import Txn

__all__ = ["HostDecommissions", "refusal"]

log = logging.getLogger(__name__)

SHOWN = 10
"""Instances a refusal names (then ``and N more``)."""


def refusal(state: ClusterState, host_id: str) -> str:
    """Why the agent of a decommissioned host may not register (empty: it may)."""
    mark = state.decommissioned.get(host_id)
    if mark is None:
        return ""
    building = str(json.loads(mark).get("building", ""))
    return (f"host {host_id} was decommissioned (building {building or '(default)'}) and may "
            "not register again under that id; start its agent with a new host id to bring "
            "the machine back")


@dataclass(frozen=True)
class Decommissioned:
    host: HostRecord
    statuses: int
    """Leftover status records removed with it."""


class HostDecommissions:
    def __init__(self, *, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 hosts: HostRecords, fleet: Fleet, events: EventLog, clock: Clock) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._hosts = hosts
        self._fleet = fleet
        self._events = events
        self._clock = clock

    async def decommission(self, host_id: str) -> Decommissioned:
        self._writes.require_lead()

        async def attempt() -> Decommissioned:
            found = self._state.hosts.get(host_id)
            if found is None:
                raise NotFound(f"host {host_id!r} does not exist (`landlord hosts list` "
                               "shows the registered hosts)", host=host_id)
            self._check_drained(found.value)
            statuses = sorted(iid for iid, s in self._state.statuses.items()
                              if s.host_id == host_id and iid not in self._state.instances)
            host = found.value
            mark = json.dumps({"at": self._clock.now(), "building": host.building},
                              sort_keys=True).encode()
            extra = Txn().put(self._layout.decommissioned(host_id), mark)
            drain = self._state.drains.get(host_id)
            if drain is not None:
                extra.require(self._layout.drain(host_id), drain.mod_revision)
                extra.delete(self._layout.drain(host_id))
            extra.extend(self._events.staged([self._events.make(
                EventType.HOST_DECOMMISSIONED.value,
                f"{host_id} decommissioned: removed from the cluster with its records",
                host_id=host_id, building=host.building)]))
            await self._hosts.forget(found, statuses, extra)
            return Decommissioned(host, len(statuses))

        done = await self._writes.retry(attempt, f"decommissioning host {host_id}",
                                        host=host_id)
        session = self._fleet.sessions.get(host_id)
        if session is not None:
            session.close("this host was decommissioned")
            self._fleet.detach(session, self._clock.monotonic())
        self._fleet.forget_host(host_id)
        log.info("host %s (building %s) decommissioned; %d status record(s) removed with it",
                 host_id, done.host.building, done.statuses)
        return done

    def _check_drained(self, host: HostRecord) -> None:
        host_id = host.host_id
        placed = sorted(self._state.instances_on(host_id), key=lambda i: i.instance_id)
        if placed:
            names = ", ".join(f"{i.apartment}/{i.unit} {i.instance_id}" for i in placed[:SHOWN])
            more = f" and {len(placed) - SHOWN} more" if len(placed) > SHOWN else ""
            raise FailedPrecondition(
                f"host {host_id} is not drained: {len(placed)} instance(s) are still placed "
                f"on it ({names}{more}); run `landlord hosts drain {host_id}` first",
                host=host_id)
        drain = drain_of(self._state, host_id)
        if drain is not None and drain.state is DrainState.DRAINING:
            raise FailedPrecondition(f"host {host_id} is still draining; wait for the drain "
                                     "to end", host=host_id)
        if not host.cordoned:
            raise FailedPrecondition(
                f"host {host_id} is not cordoned, so new instances may land on it; run "
                f"`landlord hosts drain {host_id}` (or `hosts cordon`) first", host=host_id)
