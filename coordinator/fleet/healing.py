"""Host liveness in action: suspect and lost hosts, and the instances they stranded.

Each tick decides (coordinator/fleet/liveness.py) which hosts changed health, then acts: a lost
host is recorded as lost, its liveness lease revoked, and every instance it held is placed
again on another host of the building (one transaction per instance: the new instance and
allocation in, the old ones out), started there, and routed on every host. An instance that
finds no room stays where it was and is tried again on the next tick. A paused instance
stays too: it serves nothing, and a replacement would run what an operator froze (its host,
back, keeps it paused). A collected one stays while the host may come back with its state
backup; once the host has been lost for ``forget_after`` (when it would be forgotten) it is
placed elsewhere, still collected, so that the host can be forgotten and a wake starts it
on a live host. Desired instances a connected host does not report are started again
(CommandDispatch.converge).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from common.clock import Clock
from common.errors import Conflict, FailedPrecondition, InsufficientResources
from common.event_types import EventType
from coordinator.fleet.host_records import HostRecords
from coordinator.fleet.liveness import LivenessPolicy, plan_liveness
from coordinator.fleet.sessions import Fleet
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.records import HostHealth, InstanceRecord

__all__ = ["Healer"]

log = logging.getLogger(__name__)


class Replacing(Protocol):
    """Placing an instance again elsewhere (coordinator/fleet/placement_writer.py)."""

    async def place(self, apartment: str, unit: str, version: str, slot: str, replicas: int,
                    building: str, replaces: InstanceRecord | None = None, *,
                    collected: bool = False) -> list[InstanceRecord]: ...


class HealingCommands(Protocol):
    """Starting and routing instances (coordinator/fleet/dispatch.py)."""

    async def start_instances(self, records: Sequence[InstanceRecord]) -> int: ...

    async def set_route(self, apartment: str, unit: str) -> int: ...

    async def converge(self, resend_after: float) -> int: ...


class Healer:
    def __init__(self, *, hosts: HostRecords, placement: Replacing, commands: HealingCommands,
                 state: ClusterState, fleet: Fleet, events: EventLog, clock: Clock,
                 policy: LivenessPolicy, forget_after: float = 0.0) -> None:
        self._hosts = hosts
        self._placement = placement
        self._commands = commands
        self._state = state
        self._fleet = fleet
        self._events = events
        self._clock = clock
        self.policy = policy
        self.forget_after = forget_after
        """Seconds after which a lost host's collected instances are placed elsewhere
        (``forget_host_after``; 0: never)."""
        self._unplaceable: set[str] = set()
        self.replaced = 0

    async def tick(self) -> None:
        fleet = self._fleet
        now = self._clock.monotonic()
        buildings = {h: v.value.building for h, v in self._state.hosts.items()}
        empty = {h for h in fleet.seen if not self._state.instance_ids_on(h)}
        for change in plan_liveness(fleet.seen, fleet.health, now, self.policy, buildings,
                                    empty):
            fleet.health[change.host_id] = change.after
            if change.after == HostHealth.SUSPECT and change.before == HostHealth.ALIVE:
                log.warning("host %s is suspect (silent %.1fs)", change.host_id,
                            change.silent_for)
                await self._events.emit("host.suspect", f"{change.host_id} stopped reporting",
                                        host_id=change.host_id)
            elif change.after == HostHealth.LOST:
                await self._lose(change.host_id, change.silent_for)
        await self._replace_stranded()
        await self._move_collected()
        await self._commands.converge(resend_after=3 * self.policy.heartbeat_interval)
        await self._hosts.refresh_leases(list(fleet.sessions))

    async def _lose(self, host_id: str, silent_for: float) -> None:
        fleet = self._fleet
        found = self._state.hosts.get(host_id)
        if found is None:
            fleet.forget_host(host_id)
            return
        if found.value.status != HostHealth.LOST:
            if not await self._hosts.mark_lost(found):
                fleet.health[host_id] = HostHealth.SUSPECT
                return
            held = len(self._state.instances_on(host_id))
            log.error("host %s is lost after %.1fs of silence; placing its %d instance(s) "
                      "elsewhere", host_id, silent_for, held)
            await self._events.emit("host.lost",
                                    f"{host_id} lost after {silent_for:.1f}s of silence",
                                    host_id=host_id, instances=str(held))
        fleet.forget_observations(host_id)
        session = fleet.sessions.get(host_id)
        if session is not None:
            session.close("declared lost")
            fleet.detach(session, self._clock.monotonic())

    async def _replace_stranded(self) -> None:
        """Place again every instance that sits on a lost host. A collected one stays as it
        is (nothing runs to replace) until a wake clears its mark; then it is placed
        elsewhere like the others (its state backup stays on the lost host)."""
        state = self._state
        stranded = [r for host in sorted(state.lost_host_ids()) for r in state.instances_on(host)
                    if not r.paused and not r.collected]
        for record in stranded:
            host = state.hosts[record.host_id].value
            unit = state.units.get(record.unit_key)
            building = unit.value.building if unit and unit.value.building else host.building
            try:
                placed = await self._placement.place(record.apartment, record.unit, record.version,
                                       record.slot, 1, building, replaces=record)
            except (InsufficientResources, FailedPrecondition, Conflict) as exc:
                if record.instance_id not in self._unplaceable:
                    self._unplaceable.add(record.instance_id)
                    log.error("cannot place %s again: %s", record.instance_id, exc)
                    await self._events.emit("instance.unplaceable", str(exc),
                                            apartment=record.apartment, unit=record.unit,
                                            instance_id=record.instance_id)
                continue
            self._unplaceable.discard(record.instance_id)
            self.replaced += 1
            log.info("%s (lost host %s) replaced by %s on %s", record.instance_id,
                     record.host_id, placed[0].instance_id, placed[0].host_id)
            await self._commands.start_instances(placed)
            await self._commands.set_route(record.apartment, record.unit)

    async def _move_collected(self) -> None:
        """Place the collected instances of hosts lost for ``forget_after`` again
        elsewhere, still collected (nothing starts); their state backups stay behind."""
        if self.forget_after <= 0:
            return
        state, now = self._state, self._clock.now()
        for host_id in sorted(state.lost_host_ids()):
            host = state.hosts[host_id].value
            if host.status_changed_at <= 0 or now - host.status_changed_at < self.forget_after:
                continue
            for record in [r for r in state.instances_on(host_id) if r.collected]:
                unit = state.units.get(record.unit_key)
                building = unit.value.building if unit and unit.value.building else (
                    host.building)
                try:
                    placed = await self._placement.place(
                        record.apartment, record.unit, record.version, record.slot, 1,
                        building, replaces=record, collected=True)
                except (InsufficientResources, FailedPrecondition, Conflict) as exc:
                    if record.instance_id not in self._unplaceable:
                        self._unplaceable.add(record.instance_id)
                        log.error("cannot move collected %s off lost host %s: %s",
                                  record.instance_id, host_id, exc)
                    continue
                self._unplaceable.discard(record.instance_id)
                moved = placed[0]
                await self._events.emit(
                    EventType.COLLECTED_MOVED.value, f"{record.instance_id} (collected, on "
                    f"{host_id}, lost for {now - host.status_changed_at:.0f}s) is now "
                    f"{moved.instance_id} on {moved.host_id}, still collected; its state "
                    f"backup stayed on {host_id}", apartment=record.apartment,
                    unit=record.unit, instance_id=moved.instance_id, host_id=moved.host_id,
                    from_instance=record.instance_id, from_host=host_id)
