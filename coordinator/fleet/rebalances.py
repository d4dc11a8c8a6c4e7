"""Rebalancing units in action: start one (operator or automatic), step every one (a leader
duty).

``start(apartment, unit)`` writes the unit's rebalance record with a
``unit.rebalance_started`` event in one fenced transaction (asking again while one runs
returns it unchanged; a unit already even gets a record that is ``done`` at once). Each
leader round observes every running rebalance, asks ``plan_rebalance``
(coordinator/fleet/rebalance_plan.py) for the next record and action, commits the record
(guarded by the revision read, with a ``unit.rebalance_ended`` event when it ends), then
acts through the shared mover (coordinator/fleet/instance_mover.py), the one host drains
use.

The automatic rebalance: a running unit whose spread breaks placement's rule (its plan is
not empty) for longer than ``grace`` seconds (``rebalance_grace``; 0 turns it off) is
rebalanced by itself, unless its unit has an active rollout, a host drain runs, or a host
of its building is cordoned or not alive (the clock starts again once all is clear). The
time a unit turned uneven is the leader's memory: a new leader counts the grace afresh.
"""

from __future__ import annotations

import asyncio
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
    NotFound,
    Unavailable,
)
from common.event_types import EventType
from coordinator.fleet.drains import drain_of
from coordinator.fleet.instance_move import MoveAction, MovePhase
from coordinator.fleet.instance_mover import InstanceMover
from coordinator.fleet.placement import HostRoom
from coordinator.fleet.rebalance_plan import (
    RebalanceRecord,
    RebalanceState,
    RebalanceView,
    SpreadMove,
    plan_rebalance,
    plan_spread,
    spread_even,
)
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import EventRecord, HostHealth, HostRecord, InstanceRecord
from coordinator.state.store import Txn

__all__ = ["OPERATOR", "RebalanceStart", "UnitRebalances", "rebalance_of"]

log = logging.getLogger(__name__)

YIELD_EVERY = 200
"""The automatic check gives the event loop a turn after this many units."""

CHECKS_PER_GRACE = 20
"""The automatic check (every running unit's spread) runs this often per grace, not every
round: it costs units x instances, and a grace is minutes."""

OPERATOR = "requested by an operator"
UnitKey = tuple[str, str]


class PlaceableHosts(Protocol):
    def placeable_hosts(self, building: str) -> list[HostRecord]: ...


def rebalance_of(state: ClusterState, apartment: str, unit: str) -> RebalanceRecord | None:
    """The unit's rebalance record as the cache holds it (None: never rebalanced)."""
    found = state.rebalances.get((apartment, unit))
    return None if found is None else RebalanceRecord.from_dict(json.loads(found.value))


@dataclass(frozen=True)
class RebalanceStart:
    record: RebalanceRecord
    plan: tuple[SpreadMove, ...]
    """The moves it would make now (decided again before each move)."""
    started: bool
    """False when a rebalance of the unit was already running (returned as it is)."""


class UnitRebalances:
    def __init__(self, *, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 events: EventLog, mover: InstanceMover, hosts: PlaceableHosts, clock: Clock,
                 grace: float = 180.0, settle: float = 2.0, start_timeout: float = 120.0
                 ) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._events = events
        self._mover = mover
        self._hosts = hosts
        self._clock = clock
        self.grace = grace
        """Seconds a unit's spread may stay uneven before it is rebalanced (0: never)."""
        self.settle = settle
        self.start_timeout = start_timeout
        self._uneven_since: dict[UnitKey, float] = {}
        self._checked_at = float("-inf")

    # -- reads ---------------------------------------------------------------------------

    def building_of(self, key: UnitKey) -> str:
        found = self._state.units.get(key)
        return found.value.building if found is not None else ""

    def preview(self, apartment: str, unit: str, rooms: Sequence[HostRoom] | None = None
                ) -> tuple[SpreadMove, ...]:
        """The moves that would even the unit out now (``rooms``: its building's, when the
        caller already has them)."""
        if rooms is None:
            rooms = self._mover.placement.rooms(self.building_of((apartment, unit)))
        return plan_spread(self._state.instances_of(apartment, unit), rooms,
                           self._mover.placement.port_range)

    def halt(self, key: UnitKey) -> str:
        """Why a rebalance of the unit may not run now (empty: it may)."""
        if key in self._state.active_rollouts:
            return f"{key[0]}/{key[1]} has an active rollout"
        for host_id in sorted(self._state.drains):
            drain = drain_of(self._state, host_id)
            if drain is not None and drain.state.active:
                return f"host {host_id} is being drained"
        return ""

    def _unsettled(self, building: str) -> str:
        """Why the automatic rebalance waits in ``building``: a host cordoned or not alive."""
        placeable = {h.host_id for h in self._hosts.placeable_hosts(building)}
        for host in self._state.hosts_in(building):
            if host.cordoned:
                return f"host {host.host_id} is cordoned"
            if host.status == HostHealth.LOST or host.host_id not in placeable:
                return f"host {host.host_id} is not alive"
        return ""

    # -- operator calls ------------------------------------------------------------------

    async def start(self, apartment: str, unit: str, reason: str = OPERATOR) -> RebalanceStart:
        """Start rebalancing the unit (see the module doc)."""
        self._writes.require_lead()
        key = (apartment, unit)
        found = self._state.units.get(key)
        if found is None:
            raise NotFound(f"unit {apartment}/{unit} does not exist", unit=unit)
        current = rebalance_of(self._state, apartment, unit)
        if current is not None and current.state.active:
            return RebalanceStart(current, self.preview(apartment, unit), False)
        why = self.halt(key)
        if why:
            raise FailedPrecondition(f"cannot rebalance {apartment}/{unit} now: {why}",
                                     unit=unit)
        plan = self.preview(apartment, unit)
        now = self._clock.now()
        record = RebalanceRecord(apartment, unit, RebalanceState.RUNNING, now, reason,
                                 message=f"{len(plan)} move(s) planned")
        if not plan:
            record = replace(record, state=RebalanceState.DONE, finished_at=now,
                             message="already evenly spread: nothing to move")
        event = self._events.make(
            EventType.UNIT_REBALANCE_STARTED.value,
            f"rebalancing {apartment}/{unit} ({reason}): {len(plan)} move(s) planned",
            apartment=apartment, unit=unit, reason=reason, moves=str(len(plan)))
        await self._write(record, event if plan else None)
        self._uneven_since.pop(key, None)
        return RebalanceStart(record, plan, True)

    async def start_all(self, apartment: str = "") -> list[RebalanceStart]:
        """Start rebalancing every unit (of ``apartment`` when given) whose spread is uneven
        or whose rebalance runs; units that may not run now are left out."""
        started = []
        for key in sorted(self._state.units):
            if (apartment and key[0] != apartment) or self.halt(key):
                continue
            current = rebalance_of(self._state, *key)
            if (current is not None and current.state.active) or self.preview(*key):
                started.append(await self.start(*key))
        return started

    # -- the leader's round --------------------------------------------------------------

    async def tick(self) -> None:
        for key in sorted(self._state.rebalances):
            record = rebalance_of(self._state, *key)
            if record is None or not record.state.active:
                continue
            try:
                await self._step(record)
            except (Conflict, Unavailable) as exc:
                log.warning("rebalance of %s/%s: step not taken this round: %s", *key, exc)
        now = self._clock.now()
        if self.grace > 0 and now - self._checked_at >= self.grace / CHECKS_PER_GRACE:
            self._checked_at = now
            await self._automatic()

    async def _automatic(self) -> None:
        now = self._clock.now()
        # per building, read once between two awaits (after one, hosts may have changed)
        rooms: dict[str, list[HostRoom]] = {}
        hosts: dict[str, frozenset[str]] = {}
        unsettled: dict[str, str] = {}
        for index, key in enumerate(sorted(self._state.units)):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # thousands of units: let the agents' streams in
                rooms, hosts, unsettled = {}, {}, {}
            found = self._state.units.get(key)
            if found is None:
                continue
            unit = found.value
            current = rebalance_of(self._state, *key)
            building = unit.building
            if building not in unsettled:
                unsettled[building] = self._unsettled(building)
            if (unit.state != "running" or (current is not None and current.state.active)
                    or unsettled[building] or self.halt(key)):
                self._uneven_since.pop(key, None)
                continue
            if building not in hosts:
                hosts[building] = frozenset(h.host_id for h in self._hosts.placeable_hosts(
                    building) if not h.cordoned)
            if spread_even(self._state.instances_of(*key), hosts[building]):
                self._uneven_since.pop(key, None)  # rooms are built only for uneven units
                continue
            if building not in rooms:
                rooms[building] = self._mover.placement.rooms(building)
            if not self.preview(*key, rooms=rooms[building]):
                self._uneven_since.pop(key, None)
                continue
            since = self._uneven_since.setdefault(key, now)
            if now - since >= self.grace:
                try:
                    await self.start(*key, reason=f"automatic: spread uneven for "
                                                  f"{now - since:.0f}s")
                except (Conflict, Unavailable, FailedPrecondition) as exc:
                    log.warning("automatic rebalance of %s/%s not started: %s", *key, exc)
                rooms, hosts, unsettled = {}, {}, {}
        for gone in set(self._uneven_since) - set(self._state.units):
            del self._uneven_since[gone]

    async def _step(self, record: RebalanceRecord) -> None:
        key = (record.apartment, record.unit)
        moving = record.moving
        halt = self.halt(key) if key in self._state.units else "the unit was deleted"
        view = RebalanceView(
            # the next move is decided once the one under way is done
            moves=self.preview(*key) if moving is None or moving.phase is MovePhase.STOPPING
            else (), move=self._mover.observe(moving), halt=halt)
        new, action = plan_rebalance(record, view, self._clock.now(), settle=self.settle,
                                     start_timeout=self.start_timeout)
        if new != record:
            await self._write(new)
        await self._act(new, action)

    async def _act(self, record: RebalanceRecord, action: MoveAction) -> None:
        if action.kind == "place" and action.instance is not None:
            await self._place(record, action.instance, action.onto)
        else:
            await self._mover.act(action)

    async def _place(self, record: RebalanceRecord, old: InstanceRecord, onto: str) -> None:
        try:
            new = await self._mover.place(old, onto)
        except (InsufficientResources, FailedPrecondition, NotFound) as exc:
            log.warning("rebalance of %s/%s: cannot place %s on %s: %s", record.apartment,
                        record.unit, old.instance_id, onto, exc)
            await self._write(replace(
                record, state=RebalanceState.STOPPED, finished_at=self._clock.now(),
                moving=None, message=f"{old.instance_id} not moved: cannot be placed on "
                                     f"{onto}: {exc}"))
            return
        assert record.moving is not None
        moving = replace(record.moving, new_id=new.instance_id, new_host=new.host_id,
                         phase=MovePhase.STARTING, since=self._clock.now())
        await self._write(replace(record, moving=moving, message=(
            f"starting {new.instance_id} on {new.host_id} to replace {old.instance_id}")))
        await self._mover.start(new)

    async def _write(self, record: RebalanceRecord, event: EventRecord | None = None) -> None:
        """Commit ``record`` over the one read (a rebalance that ends gets its event)."""
        key = self._layout.rebalance(record.apartment, record.unit)
        found = self._state.rebalances.get((record.apartment, record.unit))
        was = None if found is None else RebalanceRecord.from_dict(json.loads(found.value))
        if event is None and not record.state.active and was is not None and was.state.active:
            event = self._events.make(
                EventType.UNIT_REBALANCE_ENDED.value,
                f"rebalance of {record.apartment}/{record.unit} {record.state.value}: "
                f"{record.message}", apartment=record.apartment, unit=record.unit,
                state=record.state.value, moved=str(record.moved_count))
        txn = Txn().require(key, found.mod_revision if found else 0)
        txn.put(key, json.dumps(record.to_dict(), sort_keys=True).encode())
        if event is not None:
            txn.extend(self._events.staged([event]))
        await self._writes.commit(txn)
        log.info("rebalance of %s/%s: %s", record.apartment, record.unit, record.message)
