"""Placement recorded: decide hosts and ports, then write instances and allocations.

``place(apartment, unit, version, slot, replicas, building)`` decides with the pure
``coordinator.placement.place`` over the rooms of the building's placeable hosts, and records
the instances and their hosts' allocation ledgers in fenced compare-and-swap transactions
(each retried from a fresher cache when another change won). Many replicas take several
transactions within etcd's --max-txn-ops (placement_batches.py): each records what fits of
a decision made just before it, guarded by the allocation revisions that decision read, so
two placements never over-commit a host; the caller's ``extra`` changes go with the first.
A leader change between them leaves the first ones recorded and the rest not: the caller
holds the intent (the rollout record, the unit's replica count) and places what is missing.
Nothing is started here: the caller sends the commands (coordinator/fleet/dispatch.py).
``remove(record)`` takes an instance and its allocation out the same way.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import partial
from typing import Protocol

from common.clock import Clock
from common.errors import InsufficientResources, InvalidArgument, NotFound
from common.resources import HostLedger, Resources
from coordinator.fleet.placement import HostRoom, PlacementRequest, place
from coordinator.fleet.placement_batches import INSTANCE_OPS, fitting
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
from coordinator.state.store import FENCE_OPS, Txn

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
        avoid_hosts: frozenset[str] = frozenset(),
        after_escalation: str = "",
        onto: str = "",
        collected: bool = False,
    ) -> list[InstanceRecord]:
        """Decide and record ``replicas`` new instances (not started). See the module doc.

        ``replaces``: an instance (on a lost host) removed in the same transaction; with
        ``keep_replaced`` it stays (a drain stops it once the new one serves) and the new
        record only names it.
        ``extra``: more changes (unit, route, rollout records) committed with the first
        transaction, built again for every attempt (from the cache as it is then; it may
        refuse by raising).
        ``avoid_hosts``: hosts not to place on (besides lost ones); ``after_escalation``: why
        the replaced instance is placed again (kept on the new record).
        ``onto``: only this host is a candidate (a rebalance chose it); placement's rules
        still decide whether it fits.
        ``collected``: the new records are collected from the start (a collected instance of
        a forgotten host placed again: nothing is started until a wake).
        """
        if replicas < 1:
            raise InvalidArgument(f"replicas must be >= 1, got {replicas}", replicas=replicas)
        found = self._state.versions.get((apartment, unit), {}).get(version)
        if found is None:
            raise NotFound(f"{apartment}/{unit} has no published version {version}",
                           unit=unit, version=version)
        resources = found.tag.spec.resources

        async def attempt(wanted: int, first: bool) -> list[InstanceRecord]:
            others = Txn()  # what the first transaction carries besides new instances
            if first and replaces is not None and not keep_replaced:
                others.extend(self.removal(replaces))
            if first and extra is not None:
                others.extend(extra())
            budget = self._writes.max_txn_ops - FENCE_OPS - others.size
            # the first decides every replica (all or nothing, with the caller's intent);
            # later ones only as many as one transaction could hold (deciding is the cost)
            if not first:
                wanted = min(wanted, max(1, budget // INSTANCE_OPS))
            ids = tuple(f"{unit}-{slot}-{secrets.token_hex(4)}" for _ in range(wanted))
            rooms = self.rooms(building)
            decided = place(
                PlacementRequest(apartment, unit, slot, resources, ids, building,
                                 self._state.lost_host_ids() | avoid_hosts),
                [r for r in rooms if r.host_id == onto] if onto else rooms,
                self.port_range,
            )
            # the rest is decided again, from the cache holding this batch, next time
            take = fitting([p.host_id for p in decided], budget)
            if take == 0:
                raise InvalidArgument(
                    f"placing {apartment}/{unit} needs more than etcd's limit of "
                    f"{self._writes.max_txn_ops} operations per transaction; raise "
                    "--max-txn-ops and etcd_max_txn_ops", unit=unit)
            now = self._clock.now()
            records = [
                InstanceRecord(p.instance_id, apartment, unit, version, slot, p.host_id, p.port,
                               resources, now, replaces.instance_id if replaces else "",
                               after_escalation, collected_at=now if collected else 0.0)
                for p in decided[:take]
            ]
            await self._writes.commit(self._recording(records).extend(others))
            return records

        placed: list[InstanceRecord] = []
        while len(placed) < replicas:
            try:
                records = await self._writes.retry(partial(attempt, replicas - len(placed),
                                                           not placed),
                                                   f"placing {apartment}/{unit}", unit=unit)
            except InsufficientResources as exc:
                self.refused(str(exc.context.get("resource", "")))
                raise
            placed += records
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
        return placed

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
