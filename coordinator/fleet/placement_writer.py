"""Placement recorded: decide hosts and ports, then write instances and allocations.

``place(apartment, unit, version, slot, replicas, building)`` decides with the pure
``coordinator.placement.place`` over the rooms of the building's placeable hosts, and records
the instances and their hosts' allocation ledgers in one fenced compare-and-swap transaction
(retried from a fresher cache when another change won). Nothing is started here: the
caller sends the commands (coordinator/fleet/dispatch.py). ``remove(record)`` takes an instance
and its allocation out the same way.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol

from common.clock import Clock
from common.errors import InsufficientResources, InvalidArgument, NotFound
from common.resources import HostLedger, Resources
from coordinator.fleet.placement import HostRoom, PlacementRequest, place
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import (
    Allocation,
    HostRecord,
    InstanceRecord,
    encode,
    encode_allocations,
)
from coordinator.state.store import Txn

__all__ = ["DEFAULT_PORT_RANGE", "PlaceableHosts", "PlacementWriter"]


DEFAULT_PORT_RANGE = (20000, 29999)


class PlaceableHosts(Protocol):
    def placeable_hosts(self, building: str) -> list[HostRecord]: ...


class PlacementWriter:
    def __init__(self, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 hosts: PlaceableHosts, events: EventLog, clock: Clock,
                 port_range: tuple[int, int] = DEFAULT_PORT_RANGE) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._hosts = hosts
        self._events = events
        self._clock = clock
        self.port_range = port_range
        self._allocated_cache: dict[str, tuple[int, Resources]] = {}
        self.refused: Callable[[str], None] = lambda resource: None
        """Told the short resource of every refused placement (the metrics count them)."""

    @property
    def max_replicas(self) -> int:
        """Most instances one placement may record in one transaction: each takes an
        instance put and compare plus its host's allocation put and compare; ten ops are
        left for the unit, route and rollout records, the unit's active-rollout key and
        the fence."""
        return max(1, (self._writes.max_txn_ops - 10) // 4)

    def rooms(self, building: str) -> list[HostRoom]:
        """What each placeable host of ``building`` has, as placement sees it."""
        rooms = []
        for host in self._hosts.placeable_hosts(building):
            allocations, _ = self._state.allocation_of(host.host_id)
            slots: dict[tuple[str, str, str], int] = {}
            for inst in self._state.instances_on(host.host_id):
                key = (inst.apartment, inst.unit, inst.slot)
                slots[key] = slots.get(key, 0) + 1
            rooms.append(
                HostRoom(
                    host_id=host.host_id,
                    capacity=host.capacity,
                    allocated=self._allocated(host.host_id),
                    ports=frozenset(a.port for a in allocations.values()),
                    slots=slots,
                    cordoned=host.cordoned,
                )
            )
        return rooms

    def _allocated(self, host_id: str) -> Resources:
        """What the host's instances hold, summed once per revision of its ledger."""
        allocations, revision = self._state.allocation_of(host_id)
        cached = self._allocated_cache.get(host_id)
        if cached is None or cached[0] != revision:
            ledger = HostLedger(host_id, Resources(),
                                {i: a.resources for i, a in allocations.items()})
            cached = (revision, ledger.allocated)
            self._allocated_cache[host_id] = cached
        return cached[1]

    async def place(
        self,
        apartment: str,
        unit: str,
        version: str,
        slot: str,
        replicas: int,
        building: str,
        replaces: InstanceRecord | None = None,
        extra: Callable[[], Txn] | None = None,
        keep_replaced: bool = False,
    ) -> list[InstanceRecord]:
        """Decide and record ``replicas`` new instances (not started). See the module doc.

        ``replaces``: an instance (on a lost host) removed in the same transaction; with
        ``keep_replaced`` it stays (a drain stops it once the new one serves) and the new
        record only names it.
        ``extra``: more changes (unit, route, rollout records) committed together, built
        again for every attempt (from the cache as it is then; it may refuse by raising).
        """
        if replicas < 1:
            raise InvalidArgument(f"replicas must be >= 1, got {replicas}", replicas=replicas)
        found = self._state.versions.get((apartment, unit), {}).get(version)
        if found is None:
            raise NotFound(f"{apartment}/{unit} has no published version {version}",
                           unit=unit, version=version)
        resources = found.tag.spec.resources

        async def attempt() -> list[InstanceRecord]:
            ids = tuple(f"{unit}-{slot}-{secrets.token_hex(4)}" for _ in range(replicas))
            decided = place(
                PlacementRequest(apartment, unit, slot, resources, ids, building,
                                 self._state.lost_host_ids()),
                self.rooms(building),
                self.port_range,
            )
            now = self._clock.now()
            records = [
                InstanceRecord(p.instance_id, apartment, unit, version, slot, p.host_id, p.port,
                               resources, now, replaces.instance_id if replaces else "")
                for p in decided
            ]
            txn = self._recording(records)
            if replaces is not None and not keep_replaced:
                txn.extend(self.removal(replaces))
            if extra is not None:
                txn.extend(extra())
            await self._writes.commit(txn)
            return records

        try:
            records = await self._writes.retry(attempt, f"placing {apartment}/{unit}",
                                               unit=unit)
        except InsufficientResources as exc:
            self.refused(str(exc.context.get("resource", "")))
            raise
        await self._events.append([
            self._events.make(
                "instance.placed",
                f"{record.instance_id} placed on {record.host_id}:{record.port}",
                apartment=apartment, unit=unit, version=version,
                host_id=record.host_id, instance_id=record.instance_id,
                replaces=record.replaces,
            )
            for record in records
        ])
        return records

    def _recording(self, records: list[InstanceRecord]) -> Txn:
        """New instances and their hosts' ledgers (guarded by revisions)."""
        txn = Txn()
        by_host: dict[str, list[InstanceRecord]] = {}
        for record in records:
            by_host.setdefault(record.host_id, []).append(record)
            txn.require(self._layout.instance(record.instance_id), 0)
            txn.put(self._layout.instance(record.instance_id), encode(record))
        for host_id, placed in by_host.items():
            allocations, revision = self._state.allocation_of(host_id)
            for record in placed:
                allocations[record.instance_id] = Allocation(record.resources, record.port)
            txn.require(self._layout.alloc(host_id), revision)
            txn.put(self._layout.alloc(host_id), encode_allocations(allocations))
        return txn

    def removal(self, record: InstanceRecord) -> Txn:
        """Remove an instance, its status and its allocation (guarded by revisions)."""
        txn = Txn()
        current = self._state.instances.get(record.instance_id)
        txn.require(self._layout.instance(record.instance_id),
                    current.mod_revision if current else 0)
        if current is not None:
            txn.delete(self._layout.instance(record.instance_id))
        txn.delete(self._layout.status(record.instance_id))
        allocations, revision = self._state.allocation_of(record.host_id)
        if record.instance_id in allocations:
            del allocations[record.instance_id]
            txn.require(self._layout.alloc(record.host_id), revision)
            if allocations:
                txn.put(self._layout.alloc(record.host_id), encode_allocations(allocations))
            else:
                txn.delete(self._layout.alloc(record.host_id))
        return txn

    async def remove(self, record: InstanceRecord) -> None:
        """Take the instance and its allocation out of etcd (the cache holds it after)."""
        await self._writes.retry(lambda: self._writes.commit(self.removal(record)),
                                 f"removing {record.instance_id}", instance=record.instance_id)
