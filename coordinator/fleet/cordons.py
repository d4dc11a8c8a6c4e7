"""Cordoning a host: an operator takes it out of placement without touching what runs there.

The cordon is a field of the host record in etcd (``HostRecord.cordoned``), so every
coordinator sees it and a new leader keeps honouring it. It is written in one transaction
with its event (``host.cordoned`` / ``host.uncordoned``), guarded by the revision of the record
as read: a registration that lands in between makes the write retry on the fresh record
instead of one of the two changes being lost (and a registration keeps the stored cordon:
``HostRecords.register``). Asking for what already is changes nothing and writes nothing.

Placement (coordinator/fleet/placement.py) skips cordoned hosts, for first deploys, rollouts
and healing alike, and names them when nothing else fits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from common.errors import InvalidArgument, NotFound
from common.event_types import EventType
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import EventRecord, HostRecord, encode
from coordinator.state.store import Txn

__all__ = ["MAX_REASON", "CordonResult", "HostCordons"]

MAX_REASON = 200
"""Longest cordon reason accepted (it is shown in a table column)."""


@dataclass(frozen=True)
class CordonResult:
    host: HostRecord
    changed: bool
    """False when the host already was as asked."""


class HostCordons:
    def __init__(self, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 events: EventLog) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._events = events

    async def cordon(self, host_id: str, reason: str = "") -> CordonResult:
        """No new placements on ``host_id`` from now on; its instances stay."""
        reason = reason.strip()
        if len(reason) > MAX_REASON:
            raise InvalidArgument(f"a cordon reason is at most {MAX_REASON} characters, "
                                  f"got {len(reason)}", field="reason")
        return await self._set(host_id, True, reason)

    async def uncordon(self, host_id: str) -> CordonResult:
        """Make a cordoned host placeable again."""
        return await self._set(host_id, False, "")

    async def _set(self, host_id: str, cordoned: bool, reason: str) -> CordonResult:
        self._writes.require_lead()  # a follower refuses before reading anything
        verb = "cordoning" if cordoned else "uncordoning"
        key = self._layout.host(host_id)

        async def attempt() -> CordonResult:
            found = self._state.hosts.get(host_id)
            if found is None:
                raise NotFound(f"host {host_id!r} does not exist (`landlord hosts list` shows "
                               "the registered hosts)", host=host_id)
            current = found.value
            if current.cordoned == cordoned and (not cordoned or current.cordon_reason
                                                 == reason or not reason):
                return CordonResult(current, False)
            updated = replace(current, cordoned=cordoned, cordon_reason=reason)
            event = self._event(updated, first=current.cordoned != cordoned)
            txn = Txn().require(key, found.mod_revision).put(key, encode(updated))
            await self._writes.commit(txn.extend(self._events.staged([event])))
            return CordonResult(updated, True)

        return await self._writes.retry(attempt, f"{verb} host {host_id}", host=host_id)

    def _event(self, host: HostRecord, first: bool) -> EventRecord:
        if host.cordoned:
            message = (f"{host.host_id} cordoned: no new instances are placed on it"
                       + (f" ({host.cordon_reason})" if host.cordon_reason else "")
                       + ("" if first else " [reason changed]"))
            return self._events.make(EventType.HOST_CORDONED.value, message,
                                     host_id=host.host_id, building=host.building,
                                     reason=host.cordon_reason)
        return self._events.make(EventType.HOST_UNCORDONED.value,
                                 f"{host.host_id} uncordoned: placeable again",
                                 host_id=host.host_id, building=host.building)
