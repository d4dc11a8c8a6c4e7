"""RolloutFleet on the coordinator's fleet: placement, command dispatch, metrics windows
and check calls, each through the few operations the rollouts need.

- Instances: the unit's instance records with the freshest observation of each; an instance
  is healthy when it is routable (running and health >= 0.5), escalated when its agent
  published ``recovery.escalated`` for it, and carries the message of the agent's
  ``instance.start_failed`` (a failed image pull, say) when it could not be started.
- Windows: the agents' per-instance request windows of the version, merged over every
  instance and host (counts add, sketches merge) into one window since ``since``.
- Start: only the missing instances are placed (fenced transactions within etcd's
  --max-txn-ops); StartInstance goes
  to every instance of the version, with a stable instance on the same host as the state
  source in snapshot mode. Command ids are per instance, so a replay is harmless.
- Split: CommandDispatch.set_split records the route and sends it to every connected host
  of the building at once (one command, queued on every session in the same loop turn).
- Stop: CommandDispatch.stop_instance removes each instance from the route, then drains
  and stops it.

The rollout service reads the facts it admits a deploy on here too (rooms, images kept,
versions running).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from common.errors import NotFound
from common.event_types import EventType
from common.rollout_policy import Window
from common.stream_messages import MetricsWindow
from coordinator.fleet.known_fleet import KnownFleet
from coordinator.fleet.placement import HostRoom
from coordinator.rollouts.actions import (
    CheckReport,
    InstanceView,
    RunChecks,
    SetSplit,
    StartInstances,
    StopInstances,
)
from coordinator.rollouts.preview_checks import ContainerCommands, GreenTarget, PreviewChecker
from coordinator.rollouts.record import RolloutRecord
from coordinator.rollouts.status import merge_windows
from coordinator.state.cluster_state import ClusterState
from coordinator.state.records import InstanceRecord, RouteRecord, VersionRecord
from coordinator.state.store import Txn

__all__ = ["ESCALATION_EVENT", "CoordinatorFleet", "RolloutCommands", "RolloutPlacement",
           "WindowSource"]

log = logging.getLogger(__name__)

ESCALATION_EVENT = EventType.ESCALATION
START_FAILED_EVENT = EventType.START_FAILED


class RolloutPlacement(Protocol):
    """Recording new instances (coordinator/fleet/placement_writer.py)."""

    port_range: tuple[int, int]

    async def place(self, apartment: str, unit: str, version: str, slot: str, replicas: int,
                    building: str, replaces: InstanceRecord | None = None,
                    extra: Callable[[], Txn] | None = None) -> list[InstanceRecord]: ...

    def rooms(self, building: str) -> list[HostRoom]: ...


class RolloutCommands(Protocol):
    """Starting, stopping and routing (coordinator/fleet/dispatch.py)."""

    async def start_instances(self, records: Sequence[InstanceRecord],
                              state_from: Mapping[str, str] | None = None) -> int: ...

    async def stop_instance(self, instance_id: str, drain: bool = True,
                            grace_s: float | None = None) -> None: ...

    async def set_split(self, apartment: str, unit: str, split: Mapping[str, float],
                        building: str, service_port: int, health_path: str,
                        sticky: bool = False) -> RouteRecord: ...


class WindowSource(Protocol):
    """The request windows agents reported (coordinator/fleet/metrics_windows.py)."""

    def windows(self, apartment: str, unit: str, version: str = "",
                since: float = 0.0) -> list[MetricsWindow]: ...


class CoordinatorFleet:
    def __init__(self, *, state: ClusterState, known: KnownFleet,
                 placement: RolloutPlacement, commands: RolloutCommands,
                 windows: WindowSource, checks: ContainerCommands,
                 checker: PreviewChecker | None = None) -> None:
        self._state = state
        self._known = known
        self._placement = placement
        self._commands = commands
        self._windows = windows
        self._checks = checks
        self.checker = checker or PreviewChecker()

    # -- observing -------------------------------------------------------------------------

    def instances(self, record: RolloutRecord) -> tuple[InstanceView, ...]:
        views = []
        for inst in self._state.instances_of(record.apartment, record.unit):
            seen = self._known.known_state(inst.instance_id)
            events = self._state.events_of_instance(inst.instance_id)
            failures = [e.message or "no reason given" for e in events
                        if e.type == START_FAILED_EVENT]
            views.append(InstanceView(
                instance_id=inst.instance_id,
                host_id=inst.host_id,
                version=inst.version,
                healthy=seen is not None and seen.routable,
                state=seen.state if seen is not None else "",
                escalated=any(e.type == ESCALATION_EVENT for e in events),
                start_error=failures[-1] if failures else "",
            ))
        return tuple(sorted(views, key=lambda v: v.instance_id))

    def window(self, record: RolloutRecord, version: str, since: float,
               now: float) -> Window | None:
        found = self._windows.windows(record.apartment, record.unit, version, since)
        return merge_windows(found, since, now)

    # -- facts for admitting a deploy ------------------------------------------------------

    def running_versions(self, apartment: str, unit: str) -> frozenset[str]:
        """Versions of the unit that have a routable instance now."""
        running = set()
        for inst in self._state.instances_of(apartment, unit):
            seen = self._known.known_state(inst.instance_id)
            if seen is not None and seen.routable:
                running.add(inst.version)
        return frozenset(running)

    def image_kept(self, building: str, image: str) -> bool:
        return self._known.image_kept(building, image)

    def rooms(self, building: str) -> list[HostRoom]:
        return self._placement.rooms(building)

    @property
    def port_range(self) -> tuple[int, int]:
        return self._placement.port_range

    def unit_windows(self, apartment: str, unit: str) -> list[MetricsWindow]:
        """Every request window of the unit this coordinator holds (for its status)."""
        return self._windows.windows(apartment, unit)

    async def place_new(self, record: RolloutRecord, extra: Callable[[], Txn]) -> None:
        """Record the new instances of an admitted rollout, with ``extra()`` (the rollout
        record's creation, built again for every attempt) in the first transaction."""
        await self._placement.place(record.apartment, record.unit, record.to_version,
                                    record.new_slot, record.settings.replicas,
                                    record.building, extra=extra)

    # -- acting ----------------------------------------------------------------------------

    def _version(self, record: RolloutRecord, version: str) -> VersionRecord:
        found = self._state.versions.get((record.apartment, record.unit), {}).get(version)
        if found is None:
            raise NotFound(f"{record.apartment}/{record.unit} {version} is not published",
                           unit=record.unit, version=version)
        return found

    def _of_version(self, record: RolloutRecord, version: str) -> list[InstanceRecord]:
        return sorted((i for i in self._state.instances_of(record.apartment, record.unit)
                       if i.version == version), key=lambda i: i.instance_id)

    async def start_instances(self, record: RolloutRecord, action: StartInstances) -> None:
        self._version(record, action.version)
        existing = self._of_version(record, action.version)
        missing = action.replicas - len(existing)
        if missing > 0:
            existing += await self._placement.place(record.apartment, record.unit,
                                                    action.version, action.slot, missing,
                                                    record.building)
        sources: dict[str, str] = {}
        for iid in action.state_from:
            found = self._state.instances.get(iid)
            if found is not None:
                sources.setdefault(found.value.host_id, iid)
        sent = await self._commands.start_instances(existing, sources)
        if sent < len(existing):
            log.info("rollout %s: %d of %d instance(s) on hosts not connected; they get "
                     "them when they register", record.rollout_id, len(existing) - sent,
                     len(existing))

    async def set_split(self, record: RolloutRecord, action: SetSplit) -> None:
        version = self._version(record, record.to_version)
        await self._commands.set_split(record.apartment, record.unit, action.split,
                                       record.building, version.tag.spec.service_port,
                                       version.tag.spec.health_check.path, action.sticky)

    async def stop_instances(self, record: RolloutRecord, action: StopInstances) -> None:
        for inst in self._of_version(record, action.version):
            try:
                await self._commands.stop_instance(inst.instance_id, drain=action.drain)
            except NotFound:
                continue  # already gone: stopping is idempotent

    async def run_checks(self, record: RolloutRecord, action: RunChecks) -> CheckReport:
        hosts = (self._known.placeable_hosts(record.building)
                 or self._state.hosts_in(record.building))
        if not hosts:
            return CheckReport(0, (f"building {record.building} has no host to check "
                                   "green through",))
        service_port = self._version(record, action.version).tag.spec.service_port
        if action.through_entry_point and not service_port:
            return CheckReport(0, ("the version has no service port: nothing to check "
                                   "through the preview route",))
        green = next((i for i in self.instances(record)
                      if i.version == action.version and i.healthy), None)
        # checks go to a host the coordinator knows, at the entry point of this unit, pinned
        # to the version: the host of a green instance it placed when there is one
        host = min(hosts, key=lambda h: (green is None or h.host_id != green.host_id,
                                         h.host_id))
        target = GreenTarget(self._checks, green.instance_id) if green is not None else None
        return await self.checker.run(action, host.address, service_port, target)
