"""Typed read model of the cluster, fed by the ClusterView's changes.

Each record is kept with the mod revision it was read at, which is what a later
compare-and-swap must name. Undecodable values are logged and skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from common.errors import InvalidArgument
from coordinator.state.keys import KeyLayout
from coordinator.state.records import (
    ActiveRolloutRecord,
    Allocation,
    EventRecord,
    HostHealth,
    HostRecord,
    InstanceRecord,
    LeaderRecord,
    RouteRecord,
    StatusRecord,
    UnitRecord,
    VersionRecord,
    decode,
    decode_allocations,
)
from coordinator.state.store import Change, Entry

__all__ = ["ClusterState", "Versioned"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")
V = TypeVar("V")
UnitKey = tuple[str, str]
RolloutWatcher = Callable[[UnitKey, str, "bytes | None"], None]


@dataclass(frozen=True)
class Versioned(Generic[T]):
    value: T
    mod_revision: int
    create_revision: int = 0
    lease: int = 0


class ClusterState:
    """Hosts, allocations, instances, units, versions, routes, rollouts and events."""

    def __init__(self, layout: KeyLayout) -> None:
        self.layout = layout
        self.leader: Versioned[LeaderRecord] | None = None
        self.hosts: dict[str, Versioned[HostRecord]] = {}
        self._hosts_by_building: dict[str, set[str]] = defaultdict(set)
        self._lost_hosts: frozenset[str] = frozenset()
        self.alive: dict[str, int] = {}
        """host id -> lease id of its liveness key."""
        self.allocs: dict[str, Versioned[dict[str, Allocation]]] = {}
        self.instances: dict[str, Versioned[InstanceRecord]] = {}
        self._by_host: dict[str, set[str]] = defaultdict(set)
        self._by_unit: dict[UnitKey, set[str]] = defaultdict(set)
        self.statuses: dict[str, StatusRecord] = {}
        self.units: dict[UnitKey, Versioned[UnitRecord]] = {}
        self.versions: dict[UnitKey, dict[str, VersionRecord]] = defaultdict(dict)
        self.routes: dict[UnitKey, Versioned[RouteRecord]] = {}
        self.rollouts: dict[UnitKey, dict[str, Versioned[bytes]]] = defaultdict(dict)
        self.active_rollouts: dict[UnitKey, Versioned[ActiveRolloutRecord]] = {}
        """unit -> its active-rollout key (one active rollout per unit)."""
        self.drains: dict[str, Versioned[bytes]] = {}
        """host id -> its drain record (decoded by coordinator/fleet/drain_plan.py)."""
        self.rebalances: dict[UnitKey, Versioned[bytes]] = {}
        """unit -> its rebalance record (decoded by coordinator/fleet/rebalance_plan.py)."""
        self.decommissioned: dict[str, bytes] = {}
        """host id -> the mark a decommissioned host leaves (coordinator/fleet/decommission.py)."""
        self.events: dict[str, EventRecord] = {}
        self._events_by_instance: dict[str, dict[str, EventRecord]] = defaultdict(dict)
        """instance id -> its events by key (a rollout's view of its instances reads them)."""
        self._event_subscribers: set[asyncio.Queue[EventRecord]] = set()
        self._instance_watchers: list[Callable[[str, InstanceRecord | None], None]] = []
        self._rollout_watchers: set[RolloutWatcher] = set()
        self.leader_watchers: list[Callable[[], None]] = []
        """Called after the leader key changed (Leadership wakes the calls waiting on it)."""

    # -- queries ---------------------------------------------------------------------------

    def instances_on(self, host_id: str) -> list[InstanceRecord]:
        return [self.instances[i].value for i in sorted(self._by_host.get(host_id, ()))]

    def instance_ids_on(self, host_id: str) -> frozenset[str]:
        return frozenset(self._by_host.get(host_id, ()))

    def events_of_instance(self, instance_id: str) -> list[EventRecord]:
        """The kept events about one instance, oldest first."""
        found = self._events_by_instance.get(instance_id)
        return sorted(found.values(), key=lambda e: e.sequence) if found else []

    def instances_of(self, apartment: str, unit: str) -> list[InstanceRecord]:
        return [self.instances[i].value for i in sorted(self._by_unit.get((apartment, unit), ()))]

    def hosts_in(self, building: str) -> list[HostRecord]:
        return [self.hosts[h].value for h in sorted(self._hosts_by_building.get(building, ()))]

    def lost_host_ids(self) -> frozenset[str]:
        """Hosts whose record says lost (kept as an index: asked for on every route)."""
        return self._lost_hosts

    def allocation_of(self, host_id: str) -> tuple[dict[str, Allocation], int]:
        found = self.allocs.get(host_id)
        return (dict(found.value), found.mod_revision) if found else ({}, 0)

    def event_history(self) -> list[EventRecord]:
        return sorted(self.events.values(), key=lambda e: e.sequence)

    def subscribe_events(self) -> asyncio.Queue[EventRecord]:
        queue: asyncio.Queue[EventRecord] = asyncio.Queue(maxsize=10_000)
        self._event_subscribers.add(queue)
        return queue

    def unsubscribe_events(self, queue: asyncio.Queue[EventRecord]) -> None:
        self._event_subscribers.discard(queue)

    def is_subscribed(self, queue: asyncio.Queue[EventRecord]) -> bool:
        """False once a subscriber fell so far behind that it was cut off."""
        return queue in self._event_subscribers

    def watch_instances(self, callback: Callable[[str, InstanceRecord | None], None]) -> None:
        """``callback(instance_id, record or None when deleted)`` on every instance change."""
        self._instance_watchers.append(callback)

    def watch_rollouts(self, callback: RolloutWatcher) -> Callable[[], None]:
        """``callback(unit, rollout id, encoded record or None when deleted)`` on every change
        of a rollout record, in order (a watch sees every phase, however short); returns
        the call that stops it."""
        self._rollout_watchers.add(callback)
        return lambda: self._rollout_watchers.discard(callback)

    # -- feeding ---------------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """ClusterView listener."""
        entry = change.entry
        kind, parts = self.layout.kind_of(entry.key)
        deleted = change.kind == "delete"
        try:
            self._apply(kind, parts, deleted, entry.value, entry.mod_revision, entry)
        except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
            # InvalidArgument: a record written before a bound it now breaks
            log.error("skipping undecodable %s: %s", entry.key, exc)

    def _apply(
        self, kind: str, parts: tuple[str, ...], deleted: bool, value: bytes, rev: int,
        entry: Entry,
    ) -> None:
        create, lease = entry.create_revision, entry.lease

        def versioned(cls: type[R]) -> Callable[[], Versioned[R]]:
            return lambda: Versioned(decode(cls, value), rev, create)

        if kind == "leader":
            self.leader = None if deleted else versioned(LeaderRecord)()
            for on_change in self.leader_watchers:
                on_change()
        elif kind == "hosts" and len(parts) == 1:
            self._index_host(parts[0], None)
            _set(self.hosts, parts[0], deleted, versioned(HostRecord))
            host = self.hosts.get(parts[0])
            self._index_host(parts[0], None if host is None else host.value)
        elif kind == "alive" and len(parts) == 1:
            _set(self.alive, parts[0], deleted, lambda: lease)
        elif kind == "alloc" and len(parts) == 1:
            _set(self.allocs, parts[0], deleted,
                 lambda: Versioned(decode_allocations(value), rev, create))
        elif kind == "instances" and len(parts) == 1:
            self._index_instance(parts[0], None)
            _set(self.instances, parts[0], deleted, versioned(InstanceRecord))
            found = self.instances.get(parts[0])
            self._index_instance(parts[0], None if found is None else found.value)
            for watcher in self._instance_watchers:
                watcher(parts[0], None if found is None else found.value)
        elif kind == "status" and len(parts) == 1:
            _set(self.statuses, parts[0], deleted, lambda: decode(StatusRecord, value))
        elif kind == "units" and len(parts) == 2:
            _set(self.units, (parts[0], parts[1]), deleted, versioned(UnitRecord))
        elif kind == "versions" and len(parts) == 3:
            _set(self.versions[(parts[0], parts[1])], parts[2], deleted,
                 lambda: decode(VersionRecord, value))
        elif kind == "routes" and len(parts) == 2:
            _set(self.routes, (parts[0], parts[1]), deleted, versioned(RouteRecord))
        elif kind == "rollouts" and len(parts) == 3:
            _set(self.rollouts[(parts[0], parts[1])], parts[2], deleted,
                 lambda: Versioned(value, rev, create))
            for on_rollout in list(self._rollout_watchers):
                on_rollout((parts[0], parts[1]), parts[2], None if deleted else value)
        elif kind == "active-rollout" and len(parts) == 2:
            _set(self.active_rollouts, (parts[0], parts[1]), deleted,
                 versioned(ActiveRolloutRecord))
        elif kind == "drains" and len(parts) == 1:
            _set(self.drains, parts[0], deleted, lambda: Versioned(value, rev, create))
        elif kind == "rebalances" and len(parts) == 2:
            _set(self.rebalances, (parts[0], parts[1]), deleted,
                 lambda: Versioned(value, rev, create))
        elif kind == "decommissioned" and len(parts) == 1:
            _set(self.decommissioned, parts[0], deleted, lambda: value)
        elif kind == "events" and len(parts) == 1:
            self._apply_event(parts[0], deleted, value, create)

    def _index_host(self, host_id: str, record: HostRecord | None) -> None:
        """Keep the building and lost indexes (like ``_index_instance``)."""
        if record is None:
            old = self.hosts.get(host_id)
            if old is not None:
                self._hosts_by_building[old.value.building].discard(host_id)
            self._lost_hosts -= {host_id}
            return
        self._hosts_by_building[record.building].add(host_id)
        if record.status == HostHealth.LOST:
            self._lost_hosts |= {host_id}

    def _index_instance(self, iid: str, record: InstanceRecord | None) -> None:
        """Keep the host and unit indexes: drop the old record's entries, add the new one's."""
        if record is None:
            old = self.instances.get(iid)
            if old is not None:
                self._by_host[old.value.host_id].discard(iid)
                self._by_unit[old.value.unit_key].discard(iid)
            return
        self._by_host[record.host_id].add(iid)
        self._by_unit[record.unit_key].add(iid)

    def _apply_event(self, name: str, deleted: bool, value: bytes, create: int) -> None:
        if deleted:
            gone = self.events.pop(name, None)
            if gone is not None and gone.instance_id:
                about = self._events_by_instance.get(gone.instance_id, {})
                about.pop(name, None)
                if not about:
                    self._events_by_instance.pop(gone.instance_id, None)
            return
        is_new = name not in self.events
        stored = decode(EventRecord, value)
        event = replace(stored, sequence=create * 1000 + min(stored.batch_index, 999))
        self.events[name] = event
        if event.instance_id:
            self._events_by_instance[event.instance_id][name] = event
        if is_new:
            for queue in list(self._event_subscribers):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    # a reader that fell this far behind is cut off rather than slowing all
                    self._event_subscribers.discard(queue)


def _set(table: dict[K, V], key: K, deleted: bool, make: Callable[[], V]) -> None:
    """Drop ``key`` from ``table`` on a delete, else store what ``make`` decodes."""
    if deleted:
        table.pop(key, None)
    else:
        table[key] = make()
