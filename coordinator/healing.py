"""Host liveness in action: suspect and lost hosts, and the instances they stranded.

Each tick decides (coordinator/liveness.py) which hosts changed health, then acts: a lost
host is recorded as lost, its liveness lease revoked, and every instance it held is placed
again on another host of the building (one transaction per instance: the new instance and
allocation in, the old ones out), started there, and routed on every host. An instance that
finds no room stays where it was and is tried again on the next tick. Desired instances a
connected host does not report are started again (FleetControl.converge).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from common.errors import Conflict, FailedPrecondition, InsufficientResources, Unavailable
from coordinator.agents import AgentSessions
from coordinator.control import FleetControl
from coordinator.liveness import HostHealth, LivenessPolicy, plan_liveness
from coordinator.records import encode
from coordinator.store import Txn

__all__ = ["Healer"]

log = logging.getLogger(__name__)


class Healer:
    def __init__(self, control: FleetControl, sessions: AgentSessions,
                 policy: LivenessPolicy) -> None:
        self.control = control
        self.sessions = sessions
        self.policy = policy
        self._unplaceable: set[str] = set()
        self.replaced = 0

    async def tick(self) -> None:
        c = self.control
        now = c.clock.monotonic()
        buildings = {h: v.value.building for h, v in c.state.hosts.items()}
        for change in plan_liveness(c.fleet.seen, c.fleet.health, now, self.policy, buildings):
            c.fleet.health[change.host_id] = change.after
            if change.after == HostHealth.SUSPECT and change.before == HostHealth.ALIVE:
                log.warning("host %s is suspect (silent %.1fs)", change.host_id,
                            change.silent_for)
                await c.events.emit("host.suspect", f"{change.host_id} stopped reporting",
                                    host_id=change.host_id)
            elif change.after == HostHealth.LOST:
                await self._lose(change.host_id, change.silent_for)
        await self._replace_stranded()
        await c.converge(resend_after=3 * self.policy.heartbeat_interval)
        await self.sessions.refresh_leases()

    async def _lose(self, host_id: str, silent_for: float) -> None:
        c = self.control
        found = c.state.hosts.get(host_id)
        if found is None:
            c.fleet.forget_host(host_id)
            return
        if found.value.status != "lost":
            lost = replace(found.value, status="lost", status_changed_at=c.clock.now())
            txn = Txn().require(c.layout.host(host_id), found.mod_revision)
            txn.put(c.layout.host(host_id), encode(lost))
            try:
                revision = await c.store.commit(txn, c.leadership.fence)
            except (Conflict, Unavailable) as exc:
                log.warning("could not record host %s as lost yet: %s", host_id, exc)
                c.fleet.health[host_id] = HostHealth.SUSPECT
                return
            await c.view.wait_for(revision)
            await self.sessions.drop_lease(host_id)
            held = len(c.state.instances_on(host_id))
            log.error("host %s is lost after %.1fs of silence; placing its %d instance(s) "
                      "elsewhere", host_id, silent_for, held)
            await c.events.emit("host.lost", f"{host_id} lost after {silent_for:.1f}s of silence",
                                host_id=host_id, instances=str(held))
        c.fleet.forget_observations(host_id)
        session = c.fleet.sessions.get(host_id)
        if session is not None:
            session.close("declared lost")
            c.fleet.detach(session, c.clock.monotonic())

    async def _replace_stranded(self) -> None:
        """Place again every instance that sits on a lost host."""
        c = self.control
        stranded = [r for host in sorted(c.lost_hosts()) for r in c.state.instances_on(host)]
        for record in stranded:
            host = c.state.hosts[record.host_id].value
            unit = c.state.units.get(record.unit_key)
            building = unit.value.building if unit and unit.value.building else host.building
            try:
                placed = await c.place(record.apartment, record.unit, record.version,
                                       record.slot, 1, building, replaces=record)
            except (InsufficientResources, FailedPrecondition, Conflict) as exc:
                if record.instance_id not in self._unplaceable:
                    self._unplaceable.add(record.instance_id)
                    log.error("cannot place %s again: %s", record.instance_id, exc)
                    await c.events.emit("instance.unplaceable", str(exc),
                                        apartment=record.apartment, unit=record.unit,
                                        instance_id=record.instance_id)
                continue
            self._unplaceable.discard(record.instance_id)
            self.replaced += 1
            log.info("%s (lost host %s) replaced by %s on %s", record.instance_id,
                     record.host_id, placed[0].instance_id, placed[0].host_id)
            await c.start_instances(placed)
            await c.set_route(record.apartment, record.unit)
