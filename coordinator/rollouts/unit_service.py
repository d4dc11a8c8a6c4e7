"""Stop, delete and scale a unit: an operator's changes outside a rollout.

Each decision is pure (coordinator/rollouts/unit_changes.py) and made from the cache; the
change is written in one fenced transaction with its event (``unit.stopped``,
``unit.deleted``, ``unit.scaled``), guarded by the revisions of the unit record and of the
unit's active-rollout key as read, so a Deploy racing with it is serialized (one of the two
is decided again from the fresher cache). Then it acts:

- stop: the instances' records and allocations are removed in the transaction that marks
  the unit stopped (when they fit in one; else one by one after it, and a stop interrupted
  half way is finished by stopping again), so a coordinator that fails half way leaves none
  of them desired: agents stop them when they register. Then each goes the way a rollout's
  old instances go: out of every host's route (which drains it), then StopInstance (drained
  on its own host first). The route record stays: the unit's entry point answers 503 on
  every host until it is deployed again or deleted. Its versions and rollout history stay;
  the record says ``stopped`` with no stable version, so a deploy starts it like a first one.
- delete: the unit record, versions, rollouts, route and active-rollout key go in one
  transaction; then every host of the building drops the unit's entry point (a SetRoute
  without a service port), after which it refuses connections.
- scale up: the missing instances of the stable version are placed (the first in the
  transaction that records the count, the rest in more within etcd's --max-txn-ops; a scale
  cut short by a leader change is finished by asking again; a refusal for room is
  RESOURCE_EXHAUSTED naming the short resource, from placement) and started; routes list
  them in maintenance until they are healthy.
- scale down: the count is recorded, then the chosen instances are stopped as above.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from common.clock import Clock
from common.errors import FailedPrecondition, NotFound
from common.event_types import EventType
from common.stream_commands import AgentCommand, SetRoute, StopInstance
from common.stream_messages import ObservedInstance
from coordinator.rollouts.one_active import already_active
from coordinator.rollouts.pausing import refuse_paused
from coordinator.rollouts.record import RolloutRecord
from coordinator.rollouts.unit_changes import (
    InstanceFacts,
    check_scale_count,
    choose_removals,
    deletable,
    dependants,
    refuse_dependants,
    scaled,
    stopped,
)
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import (
    EventRecord,
    InstanceRecord,
    UnitRecord,
    encode,
    encode_allocations,
)
from coordinator.state.store import Txn

__all__ = ["UnitChange", "UnitService"]

log = logging.getLogger(__name__)


class UnitPlacement(Protocol):
    """Recording new instances (coordinator/fleet/placement_writer.py)."""

    async def place(self, apartment: str, unit: str, version: str, slot: str, replicas: int,
                    building: str, replaces: InstanceRecord | None = None,
                    extra: Callable[[], Txn] | None = None) -> list[InstanceRecord]: ...


class UnitCommands(Protocol):
    """Starting and draining instances (coordinator/fleet/dispatch.py)."""

    async def start_instances(self, records: Sequence[InstanceRecord],
                              state_from: Mapping[str, str] | None = None) -> int: ...

    async def stop_instance(self, instance_id: str, drain: bool = True,
                            grace_s: float | None = None) -> None: ...

    async def set_route(self, apartment: str, unit: str) -> int: ...

    @property
    def stop_grace_s(self) -> float: ...


class Broadcast(Protocol):
    """Commands to hosts (coordinator/fleet/sessions.py)."""

    def broadcast(self, host_ids: Iterable[str], command: AgentCommand) -> int: ...

    def send(self, host_id: str, command: AgentCommand) -> bool: ...

    def unobserve(self, instance_id: str) -> ObservedInstance | None: ...


class InstanceStates(Protocol):
    def known_state(self, instance_id: str) -> ObservedInstance | None: ...


class ActiveRollouts(Protocol):
    """The unit's active rollout (coordinator/rollouts/etcd_records.py)."""

    def active(self, apartment: str, unit: str) -> tuple[RolloutRecord, int] | None: ...


@dataclass(frozen=True)
class UnitChange:
    """What a stop, delete or scale did."""

    unit: UnitRecord
    instances: int
    """Instances of the unit recorded after the change."""
    changed: bool
    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()


class UnitService:
    def __init__(self, *, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 events: EventLog, clock: Clock, rollouts: ActiveRollouts,
                 placement: UnitPlacement, commands: UnitCommands, hosts: Broadcast,
                 known: InstanceStates) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._events = events
        self._clock = clock
        self._rollouts = rollouts
        self._placement = placement
        self._commands = commands
        self._hosts = hosts
        self._known = known

    # -- facts -----------------------------------------------------------------------------

    def _unit(self, apartment: str, unit: str) -> tuple[UnitRecord, int]:
        """The unit record and its revision (0: published but never deployed)."""
        key = (apartment, unit)
        found = self._state.units.get(key)
        if found is not None:
            return found.value, found.mod_revision
        if self._state.versions.get(key):
            return UnitRecord(apartment, unit), 0
        raise NotFound(f"unit {apartment}/{unit} does not exist (`landlord units list` shows "
                       "the units)", unit=unit)

    def _refuse_if_rolling(self, apartment: str, unit: str) -> None:
        active = self._rollouts.active(apartment, unit)
        if active is not None:
            raise already_active(active[0])

    def _guarded(self, unit: UnitRecord, revision: int, event: EventRecord,
                 write: bool = True) -> Txn:
        """The unit record written (or deleted) under its revision, the active-rollout key
        as read, and the event."""
        key = self._layout.unit(unit.apartment, unit.unit)
        active_key = self._layout.active_rollout(unit.apartment, unit.unit)
        holder = self._state.active_rollouts.get((unit.apartment, unit.unit))
        txn = Txn().require(key, revision).require(
            active_key, holder.mod_revision if holder is not None else 0)
        if write:
            txn.put(key, encode(unit))
        elif revision:
            txn.delete(key)
        return txn.extend(self._events.staged([event]))

    async def _drain_and_stop(self, instance_ids: Iterable[str]) -> tuple[str, ...]:
        done = []
        for instance_id in instance_ids:
            try:
                await self._commands.stop_instance(instance_id, drain=True)
            except NotFound:
                continue  # stopped meanwhile: stopping is idempotent
            done.append(instance_id)
        return tuple(done)

    # -- stop ------------------------------------------------------------------------------

    async def stop(self, apartment: str, unit: str) -> UnitChange:
        """Drain and stop every instance of the unit; it shows as stopped (idempotent)."""
        self._writes.require_lead()

        async def attempt() -> tuple[UnitRecord, list[InstanceRecord], bool, bool]:
            current, revision = self._unit(apartment, unit)
            self._refuse_if_rolling(apartment, unit)
            instances = self._state.instances_of(apartment, unit)
            updated = stopped(current, bool(instances), self._clock.now())
            if updated is None:
                return current, [], False, False
            event = self._events.make(
                EventType.UNIT_STOPPED.value,
                f"{apartment}/{unit} stopped: {len(instances)} instance(s) drain and stop; "
                "its versions and history stay",
                apartment=apartment, unit=unit, version=current.stable_version,
                building=current.building, stopped_version=current.stable_version,
                instances=str(len(instances)))
            txn = self._guarded(updated, revision, event)
            # the instances and their allocations go with the record when they fit in one
            # transaction: a coordinator that stops half way leaves none of them desired
            together = txn.extend(self._removals(instances))
            removed = together.size + 2 <= self._writes.max_txn_ops  # 2: the fence
            await self._writes.commit(together if removed else
                                      self._guarded(updated, revision, event))
            return updated, instances, True, removed

        record, instances, changed, removed = await self._writes.retry(
            attempt, f"stopping {apartment}/{unit}", unit=unit)
        if removed:
            done = await self._stop_removed(apartment, unit, instances)
        else:
            done = await self._drain_and_stop(sorted(i.instance_id for i in instances))
        return UnitChange(record, len(self._state.instances_of(apartment, unit)), changed,
                          stopped=done)

    def _removals(self, instances: Sequence[InstanceRecord]) -> Txn:
        """The instances, their statuses and their allocations removed (guarded by
        revisions), each host's ledger written once."""
        txn = Txn()
        by_host: dict[str, list[str]] = {}
        for inst in instances:
            found = self._state.instances.get(inst.instance_id)
            path = self._layout.instance(inst.instance_id)
            txn.require(path, found.mod_revision if found else 0)
            if found is not None:
                txn.delete(path)
            txn.delete(self._layout.status(inst.instance_id))
            by_host.setdefault(inst.host_id, []).append(inst.instance_id)
        for host_id, ids in sorted(by_host.items()):
            allocations, revision = self._state.allocation_of(host_id)
            left = {iid: a for iid, a in allocations.items() if iid not in ids}
            if left == allocations:
                continue
            txn.require(self._layout.alloc(host_id), revision)
            if left:
                txn.put(self._layout.alloc(host_id), encode_allocations(left))
            else:
                txn.delete(self._layout.alloc(host_id))
        return txn

    async def _stop_removed(self, apartment: str, unit: str,
                            instances: Sequence[InstanceRecord]) -> tuple[str, ...]:
        """What CommandDispatch.stop_instance does after its removal: out of every host's
        route (each drains it), then StopInstance (drained on its own host first)."""
        for inst in instances:
            self._hosts.unobserve(inst.instance_id)
        await self._commands.set_route(apartment, unit)
        for inst in instances:
            self._hosts.send(inst.host_id, StopInstance(inst.instance_id,
                                                        self._commands.stop_grace_s, True))
        return tuple(sorted(i.instance_id for i in instances))

    # -- delete ----------------------------------------------------------------------------

    async def delete(self, apartment: str, unit: str,
                     reach: Callable[[str], bool] = lambda apartment: True) -> UnitChange:
        """Remove a stopped unit entirely: records, versions, rollouts and route."""
        self._writes.require_lead()
        key = (apartment, unit)

        async def attempt() -> tuple[UnitRecord, str]:
            current, revision = self._unit(apartment, unit)
            self._refuse_if_rolling(apartment, unit)
            deletable(current, len(self._state.instances_of(apartment, unit)))
            refuse_dependants(apartment, unit, dependants(apartment, unit, self._running(),
                                                          self._state.versions), reach)
            versions = sorted(self._state.versions.get(key, {}))
            rollouts = dict(self._state.rollouts.get(key, {}))
            route = self._state.routes.get(key)
            event = self._events.make(
                EventType.UNIT_DELETED.value,
                f"{apartment}/{unit} deleted with {len(versions)} version(s) and "
                f"{len(rollouts)} rollout record(s)", apartment=apartment, unit=unit,
                versions=",".join(versions), rollouts=str(len(rollouts)))
            txn = self._guarded(current, revision, event, write=False)
            holder = self._state.active_rollouts.get(key)
            if holder is not None:
                txn.delete(self._layout.active_rollout(apartment, unit))
            for version in versions:
                txn.delete(self._layout.version(apartment, unit, version))
            for rollout_id, found in rollouts.items():
                path = self._layout.rollout(apartment, unit, rollout_id)
                txn.require(path, found.mod_revision).delete(path)
            building = current.building
            if route is not None:
                building = building or route.value.building
                path = self._layout.route(apartment, unit)
                txn.require(path, route.mod_revision).delete(path)
            await self._writes.commit(txn)
            return current, building if route is not None else ""

        record, building = await self._writes.retry(attempt, f"deleting {apartment}/{unit}",
                                                    unit=unit)
        if building:
            # no service port: every host of the building drops the unit's entry point
            hosts = [h.host_id for h in self._state.hosts_in(building)]
            self._hosts.broadcast(hosts, SetRoute(apartment, unit, 0, ""))
        return UnitChange(record, 0, True)

    def _running(self) -> dict[tuple[str, str], set[str]]:
        """Unit -> the versions its instances run."""
        running: dict[tuple[str, str], set[str]] = {}
        for found in self._state.instances.values():
            running.setdefault(found.value.unit_key, set()).add(found.value.version)
        return running

    # -- scale -----------------------------------------------------------------------------

    async def scale(self, apartment: str, unit: str, replicas: int) -> UnitChange:
        """Run ``replicas`` instances of the stable version, without a rollout."""
        count = check_scale_count(replicas)
        self._writes.require_lead()
        current, _ = self._unit(apartment, unit)
        self._refuse_if_rolling(apartment, unit)
        scaled(current, count, 0.0)  # refuses a unit without a running stable version
        refuse_paused(f"{apartment}/{unit}", self._state.instances_of(apartment, unit),
                      "scaled")
        stable = self._stable(current)
        if len(stable) < count:
            return await self._scale_up(current, stable, count)
        removals = choose_removals([self._facts(i) for i in stable], count)

        async def attempt() -> UnitRecord:
            fresh, revision = self._unit(apartment, unit)
            self._refuse_if_rolling(apartment, unit)
            updated = scaled(fresh, count, self._clock.now())
            if fresh.replicas == count and not removals:
                return fresh
            await self._writes.commit(self._guarded(
                updated, revision, self._scaled_event(fresh, len(stable), count)))
            return updated

        record = await self._writes.retry(attempt, f"scaling {apartment}/{unit}", unit=unit)
        done = await self._drain_and_stop(removals)
        return UnitChange(record, len(self._stable(record)), bool(done) or record != current,
                          stopped=done)

    async def _scale_up(self, current: UnitRecord, stable: list[InstanceRecord],
                        count: int) -> UnitChange:
        apartment, unit = current.apartment, current.unit
        had = len(stable)
        written: list[UnitRecord] = []

        def extra() -> Txn:
            fresh, revision = self._unit(apartment, unit)
            self._refuse_if_rolling(apartment, unit)
            if len(self._stable(fresh)) != had:
                # decided on a count another change moved: not retried with a stale count
                raise FailedPrecondition(f"{apartment}/{unit} was scaled or deployed while "
                                         "this scale was placed; ask again", unit=unit)
            updated = scaled(fresh, count, self._clock.now())
            written[:] = [updated]
            return self._guarded(updated, revision, self._scaled_event(fresh, had, count))

        slot = stable[0].slot if stable else "blue"
        new = await self._placement.place(apartment, unit, current.stable_version, slot,
                                          count - had, current.building, extra=extra)
        await self._commands.start_instances(new)
        return UnitChange(written[-1], had + len(new), True,
                          started=tuple(sorted(i.instance_id for i in new)))

    def _stable(self, unit: UnitRecord) -> list[InstanceRecord]:
        return sorted((i for i in self._state.instances_of(unit.apartment, unit.unit)
                       if i.version == unit.stable_version), key=lambda i: i.instance_id)

    def _facts(self, inst: InstanceRecord) -> InstanceFacts:
        seen = self._known.known_state(inst.instance_id)
        return InstanceFacts(inst.instance_id, inst.host_id,
                             seen is not None and seen.routable, inst.created_at)

    def _scaled_event(self, unit: UnitRecord, had: int, count: int) -> EventRecord:
        return self._events.make(
            EventType.UNIT_SCALED.value,
            f"{unit.apartment}/{unit.unit} {unit.stable_version} scaled from {had} to {count} "
            "instance(s)", apartment=unit.apartment, unit=unit.unit,
            version=unit.stable_version, from_replicas=str(had), replicas=str(count))
