"""RolloutFleet on the coordinator's FleetControl (coordinator/control.py).

- Instances: the unit's instance records with the freshest observation of each; an instance
  is healthy when it is routable (running and health >= 0.5) and escalated when its agent
  published ``recovery.escalated`` for it.
- Windows: the agents' per-instance request windows of the version, merged over every
  instance and host (counts add, sketches merge) into one window since ``since``.
- Start: only the missing instances are placed (one fenced transaction); StartInstance goes
  to every instance of the version, with a stable instance on the same host as the state
  source in snapshot mode. Command ids are per instance, so a replay is harmless.
- Split: FleetControl.set_split records the route and sends it to every connected host of
  the building at once (one command, queued on every session in the same loop turn).
- Stop: FleetControl.stop_instance removes each instance from the route, then drains and
  stops it.
"""

from __future__ import annotations

import logging

from common.errors import NotFound
from common.rollout_policy import Window
from coordinator.agent_messages import StartCommand
from coordinator.control import FleetControl
from coordinator.records import InstanceRecord, VersionRecord
from coordinator.rollouts.actions import (
    CheckReport,
    InstanceView,
    RunChecks,
    SetSplit,
    StartInstances,
    StopInstances,
)
from coordinator.rollouts.preview_checks import GreenTarget, PreviewChecker
from coordinator.rollouts.record import RolloutRecord
from coordinator.rollouts.status import merge_windows

__all__ = ["ESCALATION_EVENT", "ControlFleet"]

log = logging.getLogger(__name__)

ESCALATION_EVENT = "recovery.escalated"


class ControlFleet:
    def __init__(self, control: FleetControl, checker: PreviewChecker | None = None) -> None:
        self.control = control
        self.checker = checker or PreviewChecker()

    # -- observing -------------------------------------------------------------------------

    def _escalated(self) -> set[str]:
        return {e.instance_id for e in self.control.state.events.values()
                if e.type == ESCALATION_EVENT and e.instance_id}

    def instances(self, record: RolloutRecord) -> tuple[InstanceView, ...]:
        escalated = self._escalated()
        views = []
        for inst in self.control.state.instances_of(record.apartment, record.unit):
            seen = self.control.known_state(inst.instance_id)
            views.append(InstanceView(
                instance_id=inst.instance_id,
                host_id=inst.host_id,
                version=inst.version,
                healthy=seen is not None and seen.routable,
                state=seen.state if seen is not None else "",
                escalated=inst.instance_id in escalated,
            ))
        return tuple(sorted(views, key=lambda v: v.instance_id))

    def window(self, record: RolloutRecord, version: str, since: float,
               now: float) -> Window | None:
        found = self.control.windows(record.apartment, record.unit, version, since)
        return merge_windows(found, since, now)

    # -- acting ----------------------------------------------------------------------------

    def _version(self, record: RolloutRecord, version: str) -> VersionRecord:
        found = self.control.state.versions.get((record.apartment, record.unit), {}).get(version)
        if found is None:
            raise NotFound(f"{record.apartment}/{record.unit} {version} is not published",
                           unit=record.unit, version=version)
        return found

    def _of_version(self, record: RolloutRecord, version: str) -> list[InstanceRecord]:
        return sorted((i for i in self.control.state.instances_of(record.apartment, record.unit)
                       if i.version == version), key=lambda i: i.instance_id)

    async def start_instances(self, record: RolloutRecord, action: StartInstances) -> None:
        c = self.control
        c.leadership.fence  # noqa: B018  # raises NotLeader on a follower
        version = self._version(record, action.version)
        existing = self._of_version(record, action.version)
        missing = action.replicas - len(existing)
        if missing > 0:
            existing += await c.place(record.apartment, record.unit, action.version,
                                      action.slot, missing, record.building)
        sources: dict[str, str] = {}
        for iid in action.state_from:
            found = c.state.instances.get(iid)
            if found is not None:
                sources.setdefault(found.value.host_id, iid)
        for inst in existing:
            command = StartCommand(inst, version, sources.get(inst.host_id, ""))
            if not c.fleet.send(inst.host_id, command):
                log.info("rollout %s: host %s not connected; it gets %s when it registers",
                         record.rollout_id, inst.host_id, inst.instance_id)
        c.mark_route_dirty(record.apartment, record.unit)

    async def set_split(self, record: RolloutRecord, action: SetSplit) -> None:
        version = self._version(record, record.to_version)
        await self.control.set_split(record.apartment, record.unit, action.split,
                                     record.building, version.service_port,
                                     version.tag.spec.health_check.path)

    async def stop_instances(self, record: RolloutRecord, action: StopInstances) -> None:
        for inst in self._of_version(record, action.version):
            try:
                await self.control.stop_instance(inst.instance_id, drain=action.drain)
            except NotFound:
                continue  # already gone: stopping is idempotent

    async def run_checks(self, record: RolloutRecord, action: RunChecks) -> CheckReport:
        c = self.control
        hosts = c.placeable_hosts(record.building) or c.state.hosts_in(record.building)
        if not hosts:
            return CheckReport(0, (f"building {record.building} has no host to check "
                                   "green through",))
        version = self._version(record, action.version)
        if action.through_entry_point and not version.service_port:
            return CheckReport(0, ("the version has no service port: nothing to check "
                                   "through the preview route",))
        host = sorted(hosts, key=lambda h: h.host_id)[0]
        green = next((i for i in self.instances(record)
                      if i.version == action.version and i.healthy), None)
        target = GreenTarget(c, green.instance_id) if green is not None else None
        return await self.checker.run(action, host.address, version.service_port, target)
