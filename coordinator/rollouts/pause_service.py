"""Pause and resume a unit's instances (issue 17): an operator's freeze outside a rollout.

The decision is pure (coordinator/rollouts/pausing.py) and made from the cache. The
instances' ``paused`` marks are written first, with a ``unit.paused``/``unit.resumed`` event,
in fenced transactions guarded by each instance record's revision and by the unit's
active-rollout key as read (a Deploy racing with a pause is decided again from the fresher
cache). Then it acts:

- pause: every host of the building gets the unit's route without the paused instances
  (weight 0, maintenance: no new request goes to them, those under way finish); when no
  instance is left, the entry point answers 503 with ``Retry-After`` at once. Then each
  paused instance's host gets PauseInstance: it lets its own requests on the instance end,
  waits ``settle_s`` for the other hosts', and freezes the container. The allocation stays:
  a paused unit's capacity is reserved.
- resume: each host gets ResumeInstance (the container thaws: same process, same memory)
  and the route is sent again; an instance is routed once its host reports it running and
  healthy, like any other.

A host that is away gets the commands when it registers again (coordinator/fleet/reconcile.py
compares what it reports with the marks), and a new leader reads the marks from etcd.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from common.clock import Clock
from common.errors import NotFound
from common.event_types import EventType
from common.stream_commands import AgentCommand, PauseInstance, ResumeInstance
from common.stream_messages import ObservedInstance
from coordinator.rollouts.one_active import already_active
from coordinator.rollouts.pausing import PausePlan, plan_pause
from coordinator.rollouts.unit_service import ActiveRollouts
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import UnitRecord, encode
from coordinator.state.store import Txn

__all__ = ["DEFAULT_PAUSE_SETTLE_S", "PauseChange", "PauseService"]

log = logging.getLogger(__name__)

DEFAULT_PAUSE_SETTLE_S = 1.0
"""Seconds a host waits after a pause command before it freezes the instance, so requests
other hosts still had on it end (every host got the route without it first)."""


class RouteSender(Protocol):
    """Sending a unit's route to its building (coordinator/fleet/dispatch.py)."""

    async def set_route(self, apartment: str, unit: str) -> int: ...


class HostSender(Protocol):
    """Commands to one host (coordinator/fleet/sessions.py)."""

    def send(self, host_id: str, command: AgentCommand) -> bool: ...


class InstanceStates(Protocol):
    def known_state(self, instance_id: str) -> ObservedInstance | None: ...


@dataclass(frozen=True)
class PauseChange:
    """What a pause or a resume did."""

    unit: UnitRecord
    instances: int
    """Instances of the unit."""
    changed: tuple[str, ...]
    """Instances paused (or resumed) by this call."""
    paused: tuple[str, ...]
    """Instances of the unit paused afterwards."""


class PauseService:
    def __init__(self, *, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 events: EventLog, clock: Clock, rollouts: ActiveRollouts,
                 routes: RouteSender, hosts: HostSender, known: InstanceStates,
                 settle_s: float = DEFAULT_PAUSE_SETTLE_S) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._events = events
        self._clock = clock
        self._rollouts = rollouts
        self._routes = routes
        self._hosts = hosts
        self._known = known
        self.settle_s = settle_s

    async def pause(self, apartment: str, unit: str,
                    instance_ids: Sequence[str] = ()) -> PauseChange:
        """Take the instances (all of the unit's when none are named) out of every route,
        then freeze them; already paused ones are left as they are."""
        plan = await self._mark(apartment, unit, instance_ids, pause=True)
        if plan.change:
            await self._routes.set_route(apartment, unit)  # out of every host's route first
            self._send(plan, lambda iid: PauseInstance(iid, self.settle_s))
        return self._result(apartment, unit, plan)

    async def resume(self, apartment: str, unit: str,
                     instance_ids: Sequence[str] = ()) -> PauseChange:
        """Thaw the paused instances (all of the unit's when none are named); routed again
        once their hosts report them healthy. Instances not paused are left as they are."""
        plan = await self._mark(apartment, unit, instance_ids, pause=False)
        if plan.change:
            self._send(plan, ResumeInstance)
            await self._routes.set_route(apartment, unit)  # no Retry-After any more
        return self._result(apartment, unit, plan)

    # -- internals -------------------------------------------------------------------------

    async def _mark(self, apartment: str, unit: str, asked: Sequence[str],
                    pause: bool) -> PausePlan:
        self._writes.require_lead()
        name = f"{apartment}/{unit}"

        async def attempt() -> PausePlan:
            key = (apartment, unit)
            if key not in self._state.units and not self._state.versions.get(key):
                raise NotFound(f"unit {name} does not exist (`landlord units list` shows the "
                               "units)", unit=unit)
            active = self._rollouts.active(apartment, unit)
            if pause and active is not None:
                raise already_active(active[0])
            instances = self._state.instances_of(apartment, unit)
            observed = {}
            for inst in instances:
                seen = self._known.known_state(inst.instance_id)
                if seen is not None:
                    observed[inst.instance_id] = seen.state
            plan = plan_pause(name, instances, asked, pause, observed)
            if plan.change:
                await self._commit(apartment, unit, plan, pause)
            return plan

        return await self._writes.retry(attempt, f"{'pausing' if pause else 'resuming'} "
                                        f"{name}", unit=unit)

    async def _commit(self, apartment: str, unit: str, plan: PausePlan, pause: bool) -> None:
        """The marks in transactions as large as etcd takes (the event with the first)."""
        kind = EventType.UNIT_PAUSED if pause else EventType.UNIT_RESUMED
        verb = "paused" if pause else "resumed"
        event = self._events.make(
            kind.value, f"{apartment}/{unit}: {len(plan.change)} instance(s) {verb}"
            + (" (the whole unit)" if pause and plan.whole else ""),
            apartment=apartment, unit=unit, instances=",".join(plan.change),
            whole="true" if plan.whole else "")
        holder = self._state.active_rollouts.get((apartment, unit))
        guard = (self._layout.active_rollout(apartment, unit),
                 holder.mod_revision if holder is not None else 0)
        room = max(1, self._writes.max_txn_ops - 4)  # the fence, the guard and the event
        ids = list(plan.change)
        for start in range(0, len(ids), room):
            txn = Txn().require(*guard)
            if start == 0:
                txn.extend(self._events.staged([event]))
            for iid in ids[start:start + room]:
                found = self._state.instances[iid]
                path = self._layout.instance(iid)
                txn.require(path, found.mod_revision).put(
                    path, encode(replace(found.value, paused=pause)))
            await self._writes.commit(txn)

    def _send(self, plan: PausePlan, make: Callable[[str], AgentCommand]) -> None:
        for iid in plan.change:
            found = self._state.instances.get(iid)
            if found is None:
                continue  # stopped meanwhile
            command = make(iid)
            if not self._hosts.send(found.value.host_id, command):
                log.info("host %s is not connected; %s reaches it when it registers",
                         found.value.host_id, type(command).__name__)

    def _result(self, apartment: str, unit: str, plan: PausePlan) -> PauseChange:
        found = self._state.units.get((apartment, unit))
        record = found.value if found is not None else UnitRecord(apartment, unit)
        instances = self._state.instances_of(apartment, unit)
        return PauseChange(record, len(instances), plan.change,
                           tuple(sorted(i.instance_id for i in instances if i.paused)))
