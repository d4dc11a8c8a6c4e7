"""Draining hosts in action: start a drain, follow it, and step every drain (a leader duty).

``start(host_id, deadline)`` cordons the host (coordinator/fleet/cordons.py) and writes its
drain record with a ``host.drain_started`` event in one fenced transaction; asking again
while a drain runs returns it unchanged. Each leader round observes every active drain,
asks ``plan_drain`` (coordinator/fleet/drain_plan.py) for the next record and action, commits
the record (guarded by the revision read, with a ``host.drain_ended`` event when it ends),
then acts with the same means healing and rollouts use: ``PlacementWriter.place`` (the
placement rules, spread included; the old instance is kept and named by the new one),
``CommandDispatch.start_instances`` and ``set_route``, and ``CommandDispatch.stop_instance``,
which takes the old instance out of every host's route before it drains and stops it.

Uncordoning a host while it drains stops the drain (the operator wants it back).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from common.clock import Clock
from common.errors import (
    Conflict,
    FailedPrecondition,
    InsufficientResources,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from common.event_types import EventType
from common.stream_messages import ObservedInstance
from coordinator.fleet.cordons import HostCordons
from coordinator.fleet.drain_plan import (
    DrainAction,
    DrainPhase,
    DrainRecord,
    DrainState,
    DrainView,
    MovePlan,
    plan_drain,
    plan_moves,
    skip_move,
    stop_drain,
)
from coordinator.fleet.placement import HostRoom
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import EventRecord, HostHealth, InstanceRecord
from coordinator.state.store import Txn

__all__ = ["DrainStart", "HostDrains", "drain_of"]

log = logging.getLogger(__name__)

MAX_DEADLINE = 7 * 24 * 3600.0
"""Longest drain deadline accepted (a week)."""


class DrainPlacement(Protocol):
    """Recording replacements (coordinator/fleet/placement_writer.py)."""

    port_range: tuple[int, int]

    async def place(self, apartment: str, unit: str, version: str, slot: str, replicas: int,
                    building: str, replaces: InstanceRecord | None = None, *,
                    keep_replaced: bool = False) -> list[InstanceRecord]: ...

    def rooms(self, building: str) -> list[HostRoom]: ...


class DrainCommands(Protocol):
    """Starting, routing and stopping (coordinator/fleet/dispatch.py)."""

    async def start_instances(self, records: Sequence[InstanceRecord]) -> int: ...

    async def set_route(self, apartment: str, unit: str) -> int: ...

    async def stop_instance(self, instance_id: str, drain: bool = True,
                            grace_s: float | None = None) -> None: ...


class InstanceStates(Protocol):
    def known_state(self, instance_id: str) -> ObservedInstance | None: ...


def drain_of(state: ClusterState, host_id: str) -> DrainRecord | None:
    """The host's drain record as the cache holds it (None: never drained)."""
    found = state.drains.get(host_id)
    return None if found is None else DrainRecord.from_dict(json.loads(found.value))


@dataclass(frozen=True)
class DrainStart:
    record: DrainRecord
    plan: MovePlan
    """Where each instance would go now (the preview; the drain decides again per move)."""
    started: bool
    """False when a drain of the host was already running (returned as it is)."""


class HostDrains:
    def __init__(self, *, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 events: EventLog, cordons: HostCordons, placement: DrainPlacement,
                 commands: DrainCommands, known: InstanceStates, clock: Clock,
                 settle: float = 2.0, start_timeout: float = 120.0) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._events = events
        self._cordons = cordons
        self._placement = placement
        self._commands = commands
        self._known = known
        self._clock = clock
        self.settle = settle
        """Seconds a healthy replacement is routed before the old instance is stopped (for
        every host to apply the route)."""
        self.start_timeout = start_timeout

    # -- operator calls ------------------------------------------------------------------

    async def start(self, host_id: str, deadline_s: float = 0.0) -> DrainStart:
        """Cordon ``host_id`` and start draining it (see the module doc)."""
        if not 0 <= deadline_s <= MAX_DEADLINE:
            raise InvalidArgument(f"a drain deadline is between 0 (none) and "
                                  f"{MAX_DEADLINE:.0f}s, got {deadline_s:g}s", field="deadline")
        self._writes.require_lead()
        found = self._state.hosts.get(host_id)
        if found is None:
            raise NotFound(f"host {host_id!r} does not exist (`landlord hosts list` shows "
                           "the registered hosts)", host=host_id)
        if found.value.status == HostHealth.LOST:
            raise FailedPrecondition(f"host {host_id} is lost: its instances are being "
                                     "placed elsewhere by healing, not by a drain",
                                     host=host_id)
        current = drain_of(self._state, host_id)
        if current is not None and current.state.active:
            return DrainStart(current, self.preview(host_id), False)
        host = found.value
        await self._cordons.cordon(host_id, host.cordon_reason if host.cordoned else "draining")
        now = self._clock.now()
        record = DrainRecord(host_id, DrainState.DRAINING, now,
                             deadline_at=now + deadline_s if deadline_s else 0.0,
                             message="starting")
        held = len(self._state.instance_ids_on(host_id))
        event = self._events.make(
            EventType.HOST_DRAIN_STARTED.value,
            f"draining {host_id}: {held} instance(s) to move"
            + (f" within {deadline_s:.0f}s" if deadline_s else ""),
            host_id=host_id, building=host.building,
            deadline=f"{deadline_s:.0f}" if deadline_s else "")
        await self._write(record, event)
        return DrainStart(record, self.preview(host_id), True)

    def preview(self, host_id: str) -> MovePlan:
        host = self._state.hosts[host_id].value
        buildings = {k: v.value.building or host.building for k, v in self._state.units.items()}
        return plan_moves(host_id, self._state.instances_on(host_id),
                          self._placement.rooms(host.building), buildings,
                          self._state.lost_host_ids(), self._placement.port_range)

    # -- the leader's round --------------------------------------------------------------

    async def tick(self) -> None:
        for host_id in sorted(self._state.drains):
            record = drain_of(self._state, host_id)
            if record is None or not record.state.active:
                continue
            try:
                await self._step(record)
            except (Conflict, Unavailable) as exc:
                log.warning("drain of %s: step not taken this round: %s", host_id, exc)

    async def _step(self, record: DrainRecord) -> None:
        now = self._clock.now()
        host = self._state.hosts.get(record.host_id)
        view = self._observe(record)
        if host is None or not host.value.cordoned:
            why = "the host was forgotten" if host is None else "the host was uncordoned"
            new, action = stop_drain(record, view, now, f"drain stopped: {why}")
        else:
            new, action = plan_drain(record, view, now, settle=self.settle,
                                     start_timeout=self.start_timeout)
        if new != record:
            await self._write(new)
        await self._act(new, action)

    def _observe(self, record: DrainRecord) -> DrainView:
        state = self._state
        moving = record.moving
        replacement: dict[str, InstanceRecord] = {}
        healthy, errors = set(), {}
        if moving is not None:
            for inst in state.instances.values():
                if inst.value.replaces == moving.old_id:
                    replacement[moving.old_id] = inst.value
            new_id = moving.new_id or (replacement[moving.old_id].instance_id
                                       if replacement else "")
            seen = self._known.known_state(new_id) if new_id else None
            if seen is not None and seen.routable:
                healthy.add(new_id)
            errors = {e.instance_id: e.message or "no reason given"
                      for e in state.events.values()
                      if e.type == EventType.START_FAILED and e.instance_id == new_id}
        return DrainView(
            instances=state.instances_on(record.host_id),
            in_rollout=set(state.active_rollouts),
            existing=state.instances.keys(),
            replacement=replacement, healthy=healthy, start_errors=errors)

    async def _act(self, record: DrainRecord, action: DrainAction) -> None:
        if action.kind == "place" and action.instance is not None:
            await self._place(record, action.instance)
        elif action.kind == "route":
            apartment, unit = action.unit.split("/", 1)
            await self._commands.set_route(apartment, unit)
        elif action.kind in ("stop_old", "stop_new"):
            with contextlib.suppress(NotFound):  # already gone: the next round sees it
                await self._commands.stop_instance(action.instance_id, drain=True)

    async def _place(self, record: DrainRecord, old: InstanceRecord) -> None:
        host = self._state.hosts[record.host_id].value
        unit = self._state.units.get(old.unit_key)
        building = unit.value.building if unit and unit.value.building else host.building
        try:
            placed = await self._placement.place(old.apartment, old.unit, old.version,
                                                 old.slot, 1, building, replaces=old,
                                                 keep_replaced=True)
        except (InsufficientResources, FailedPrecondition, NotFound) as exc:
            log.warning("drain of %s: cannot place %s (%s/%s) elsewhere: %s", record.host_id,
                        old.instance_id, old.apartment, old.unit, exc)
            await self._write(skip_move(record, old.instance_id,
                                        f"cannot be placed elsewhere: {exc}"))
            return
        new = placed[0]
        assert record.moving is not None
        moving = replace(record.moving, new_id=new.instance_id, new_host=new.host_id,
                         phase=DrainPhase.STARTING, since=self._clock.now())
        await self._write(replace(record, moving=moving, message=(
            f"{moving.unit}: starting {new.instance_id} on {new.host_id} to replace "
            f"{old.instance_id}")))
        await self._commands.start_instances(placed)

    async def _write(self, record: DrainRecord, event: EventRecord | None = None) -> None:
        """Commit ``record`` over the one read (a drain that ends gets its event)."""
        key = self._layout.drain(record.host_id)
        found = self._state.drains.get(record.host_id)
        if event is None and not record.state.active:
            event = self._ended(record)
        txn = Txn().require(key, found.mod_revision if found else 0)
        txn.put(key, json.dumps(record.to_dict(), sort_keys=True).encode())
        if event is not None:
            txn.extend(self._events.staged([event]))
        await self._writes.commit(txn)
        if record.moving is not None and record.moving.phase is DrainPhase.PLACING:
            log.info("drain of %s: %s", record.host_id, record.message)

    def _ended(self, record: DrainRecord) -> EventRecord:
        left = len(self._state.instance_ids_on(record.host_id))
        return self._events.make(
            EventType.HOST_DRAIN_ENDED.value, f"drain of {record.host_id} "
            f"{record.state.value}: {record.message}", host_id=record.host_id,
            state=record.state.value, moved=str(record.moved_count), left=str(left))
