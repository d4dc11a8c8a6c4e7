"""The leader collects idle units and wakes them (the decision: coordinator/fleet/idle.py).

- ``round()`` (every ``idle_check_interval``): for each unit the plan finds idle, the
  instances are marked collected (``InstanceRecord.collected_at``) with a ``unit.collected``
  event in one fenced transaction (intent first), the unit's route is sent (collected
  instances carry no weight; ``wake_on_request`` tells every host to hold requests and ask
  for a wake), then each host gets ``StopInstance(collect=True)``: state backed up,
  graceful stop, container and host resources freed, a ``collected`` record kept. The
  placement, port and allocation stay reserved: a wake is a start on the same host, where
  the state backup and the image are, and never waits for room.
- ``wake(apartment, unit, why)``: the marks are cleared with a ``unit.woken`` event, the
  instances started again (StartInstance of the same ids: the agent restores the state)
  and the route sent; hosts keep holding requests until an instance is routable (or
  ``hold_s`` passes). Called by ``landlord units wake``, a deploy, and a host whose entry
  point got a request for a collected unit.

Converge and registration never start a collected instance (coordinator/fleet/dispatch.py,
coordinator/fleet/reconcile.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from common.clock import Clock
from common.event_types import EventType
from common.stream_commands import AgentCommand, StopInstance
from common.stream_messages import ObservedInstance
from coordinator.fleet.idle import Collect, UnitActivity, plan_idle
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import Fenced, FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import InstanceRecord, encode
from coordinator.state.store import Txn

__all__ = ["DEFAULT_HOLD_S", "IdleUnits"]

log = logging.getLogger(__name__)
UnitKey = tuple[str, str]

DEFAULT_HOLD_S = 30.0
"""How long hosts hold requests to a unit being woken (and keep waking it)."""


class LastRequests(Protocol):
    """When a request last reached a unit on any host (coordinator/fleet/metrics_windows.py)."""

    def last_request(self, apartment: str, unit: str) -> float: ...


class IdleCommands(Protocol):
    """Starting instances and sending routes (coordinator/fleet/dispatch.py)."""

    async def start_instances(self, records: Sequence[InstanceRecord]) -> int: ...

    async def set_route(self, apartment: str, unit: str) -> int: ...

    @property
    def stop_grace_s(self) -> float: ...


class Hosts(Protocol):
    def send(self, host_id: str, command: AgentCommand) -> bool: ...


class InstanceStates(Protocol):
    def known_state(self, instance_id: str) -> ObservedInstance | None: ...


class IdleUnits:
    def __init__(self, *, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 leadership: Fenced, events: EventLog, clock: Clock, requests: LastRequests,
                 commands: IdleCommands, hosts: Hosts, known: InstanceStates,
                 hold_s: float = DEFAULT_HOLD_S) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._leadership = leadership
        self._events = events
        self._clock = clock
        self._requests = requests
        self._commands = commands
        self._hosts = hosts
        self._known = known
        self.hold_s = hold_s
        self._fence_revision = 0
        self._lead_since = 0.0
        self._woken: dict[UnitKey, float] = {}
        """Unit -> when it was last woken (kept past the hold for the idle count)."""
        self.collected = 0
        self.woken = 0

    # -- what the data plane asks ----------------------------------------------------------

    def holds(self, apartment: str, unit: str) -> bool:
        """Whether hosts hold requests to the unit: all of it is collected, or it was woken
        within ``hold_s`` (routes still list it without a routable instance)."""
        instances = self._state.instances_of(apartment, unit)
        if instances and all(i.collected for i in instances):
            return True
        woken = self._woken.get((apartment, unit))
        return woken is not None and self._clock.now() - woken < self.hold_s

    # -- collecting ------------------------------------------------------------------------

    def activities(self, now: float) -> list[UnitActivity]:
        fence = self._leadership.fence
        if fence.create_revision != self._fence_revision:
            self._fence_revision, self._lead_since = fence.create_revision, now
        out = []
        for key, found in sorted(self._state.units.items()):
            unit = found.value
            version = self._state.versions.get(key, {}).get(unit.stable_version)
            if version is None or version.tag.spec.idle_timeout_s <= 0:
                continue  # never collected (plan_idle skips it): nothing to gather
            instances = tuple(self._state.instances_of(*key))
            observed = {}
            started = 0.0
            for inst in instances:
                seen = self._known.known_state(inst.instance_id)
                if seen is not None:
                    observed[inst.instance_id] = seen.state
                    started = max(started, seen.started_at)
                started = max(started, inst.created_at)
            out.append(UnitActivity(
                apartment=key[0], unit=key[1], state=unit.state,
                timeout_s=version.tag.spec.idle_timeout_s, instances=instances,
                observed=observed, last_request=self._requests.last_request(*key),
                since=max(self._lead_since, started, self._woken.get(key, 0.0)),
                rolling=key in self._state.active_rollouts))
        return out

    async def round(self) -> int:
        """Collect every unit idle now; returns how many."""
        self._writes.require_lead()
        now = self._clock.now()
        done = 0
        for decision in plan_idle(self.activities(now), now):
            try:
                await self.collect(decision)
                done += 1
            except Exception:  # one unit failing must not stop the others
                log.exception("collecting %s/%s failed", decision.apartment, decision.unit)
        return done

    async def collect(self, decision: Collect) -> None:
        apartment, unit = decision.apartment, decision.unit

        async def attempt() -> list[InstanceRecord]:
            now = self._clock.now()
            txn, marked = Txn(), []
            for iid in decision.instance_ids:
                found = self._state.instances.get(iid)
                if found is None or found.value.collected:
                    continue
                record = replace(found.value, collected_at=now)
                txn.require(self._layout.instance(iid), found.mod_revision)
                txn.put(self._layout.instance(iid), encode(record))
                marked.append(record)
            if not marked:
                return []
            event = self._events.make(
                EventType.UNIT_COLLECTED.value,
                f"{apartment}/{unit} collected: {decision.reason}; {len(marked)} "
                "instance(s) scaled to zero, placement kept for a wake",
                apartment=apartment, unit=unit, version=marked[0].version,
                instances=",".join(r.instance_id for r in marked),
                idle_s=f"{decision.idle_s:.0f}", timeout_s=f"{decision.timeout_s:g}")
            await self._writes.commit(txn.extend(self._events.staged([event])))
            return marked

        marked = await self._writes.retry(attempt, f"collecting {apartment}/{unit}", unit=unit)
        if not marked:
            return
        self.collected += 1
        self._woken.pop((apartment, unit), None)
        log.info("%s/%s collected: %s", apartment, unit, decision.reason)
        await self._commands.set_route(apartment, unit)
        for record in marked:
            self._hosts.send(record.host_id, StopInstance(
                record.instance_id, self._commands.stop_grace_s, drain=True, collect=True))

    # -- waking ----------------------------------------------------------------------------

    async def wake(self, apartment: str, unit: str, why: str) -> tuple[str, ...]:
        """Start the unit's collected instances again; returns their ids (none: awake)."""
        self._writes.require_lead()

        async def attempt() -> list[InstanceRecord]:
            txn, woken = Txn(), []
            for found in (self._state.instances.get(i.instance_id)
                          for i in self._state.instances_of(apartment, unit)):
                if found is None or not found.value.collected:
                    continue
                record = replace(found.value, collected_at=0.0)
                path = self._layout.instance(record.instance_id)
                txn.require(path, found.mod_revision)
                txn.put(path, encode(record))
                woken.append(record)
            if not woken:
                return []
            event = self._events.make(
                EventType.UNIT_WOKEN.value,
                f"{apartment}/{unit} woken ({why}): {len(woken)} instance(s) start again",
                apartment=apartment, unit=unit, version=woken[0].version, why=why,
                instances=",".join(r.instance_id for r in woken))
            await self._writes.commit(txn.extend(self._events.staged([event])))
            return woken

        woken = await self._writes.retry(attempt, f"waking {apartment}/{unit}", unit=unit)
        if not woken:
            return ()
        self.woken += 1
        self._woken[(apartment, unit)] = self._clock.now()
        log.info("%s/%s woken (%s): starting %d instance(s)", apartment, unit, why, len(woken))
        await self._commands.start_instances(woken)
        await self._commands.set_route(apartment, unit)
        return tuple(r.instance_id for r in woken)
