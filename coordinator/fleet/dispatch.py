"""Commands to agents: start and stop instances, send routes.

- ``start_instances(records)`` sends StartInstance to each record's host; ``converge`` sends
  it again for desired instances a connected host has not reported for a while.
- ``stop_instance(instance_id)`` removes the instance and its allocation (one transaction),
  takes it out of every host's route, then sends StopInstance (drain first).
- ``set_split(apartment, unit, {version: percent})`` records the traffic split and
  ``set_route(apartment, unit)`` sends the unit's whole data plane (SetUnitRoute) to every
  connected host of the building at once, with the versions whose images the hosts keep
  (stable and previous stable). Units whose instances changed are marked and
  their routes sent on the next ``flush_routes``.

Every command needs the lead (NotLeader on a follower); etcd writes carry the fence.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from common.clock import Clock
from common.errors import InvalidArgument, NotFound
from common.stream_commands import SetRoute, StopInstance
from common.stream_messages import ObservedInstance
from coordinator.fleet.routes import PAUSED_RETRY_AFTER_S, plan_route
from coordinator.fleet.sessions import Fleet
from coordinator.fleet.start_commands import start_command
from coordinator.state.cluster_state import ClusterState
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import InstanceRecord, RouteRecord, encode
from coordinator.state.store import Txn

__all__ = ["DEFAULT_STOP_GRACE", "CommandDispatch", "InstanceRemoval", "InstanceStates",
           "ProtectedVersions", "WakingUnits"]

log = logging.getLogger(__name__)

UnitKey = tuple[str, str]
DEFAULT_STOP_GRACE = 30.0


class InstanceStates(Protocol):
    def known_state(self, instance_id: str) -> ObservedInstance | None: ...


class ProtectedVersions(Protocol):
    """A unit's versions whose images hosts keep (coordinator/rollouts/etcd_records.py)."""

    def protected_versions(self, apartment: str, unit: str) -> tuple[str, ...]: ...


class WakingUnits(Protocol):
    """Units whose hosts hold requests (coordinator/fleet/idle_units.py)."""

    def holds(self, apartment: str, unit: str) -> bool: ...


class InstanceRemoval(Protocol):
    async def remove(self, record: InstanceRecord) -> None: ...


class CommandDispatch:
    def __init__(self, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 fleet: Fleet, known: InstanceStates, removal: InstanceRemoval, clock: Clock,
                 stop_grace_s: float = DEFAULT_STOP_GRACE) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._fleet = fleet
        self._known = known
        self._removal = removal
        self._clock = clock
        self.stop_grace_s = stop_grace_s
        self._dirty_routes: set[UnitKey] = set()
        self._start_sent: dict[str, float] = {}
        self.protected: ProtectedVersions | None = None
        """Set once the rollout records exist; routes then carry the protected versions."""
        self.waking: WakingUnits | None = None
        """Set once idle collection exists; routes of collected units then hold requests."""

    # -- starting and stopping -------------------------------------------------------------

    async def start_instances(self, records: Sequence[InstanceRecord],
                              state_from: Mapping[str, str] | None = None) -> int:
        """Send StartInstance for each record; returns how many went to a connected host.

        ``state_from``: host id -> the instance on that host whose state a new instance
        copies (snapshot state mode)."""
        self._writes.require_lead()
        sources = state_from or {}
        sent = 0
        for record in records:
            version = self._state.versions.get(record.unit_key, {}).get(record.version)
            if version is None:
                raise NotFound(f"{record.apartment}/{record.unit} {record.version} is gone",
                               unit=record.unit, version=record.version)
            command = start_command(record, version, sources.get(record.host_id, ""))
            sent += self._fleet.send(record.host_id, command)
            self._start_sent[record.instance_id] = self._clock.monotonic()
            self.mark_route_dirty(record.apartment, record.unit)
        return sent

    async def converge(self, resend_after: float) -> int:
        """Send StartInstance again for desired instances their connected host has not
        reported within ``resend_after`` seconds of the last send (a deploy interrupted
        between its commit and its commands, a lost command); returns how many."""
        now = self._clock.monotonic()
        resent = []
        asleep = self._asleep()
        for host_id in list(self._fleet.sessions):
            missing = self._state.instance_ids_on(host_id) - self._fleet.observed_ids_on(host_id)
            for iid in sorted(missing | (asleep & self._state.instance_ids_on(host_id))):
                if self._state.instances[iid].value.collected:
                    continue  # scaled to zero on purpose: only a wake starts it
                if now - self._start_sent.setdefault(iid, now) >= resend_after:
                    resent.append(self._state.instances[iid].value)
        for iid in [i for i in self._start_sent if (i in self._fleet.observed and i not in asleep)
                    or i not in self._state.instances]:
            del self._start_sent[iid]
        if resent:
            log.warning("%d desired instance(s) not reported by their host; starting them "
                        "again", len(resent))
            await self.start_instances(resent)
        return len(resent)

    def _asleep(self) -> set[str]:
        """Instances a host keeps collected that are no longer recorded collected (woken
        while the host was collecting them): started again like missing ones."""
        out = set()
        for iid, seen in self._fleet.observed.items():
            found = self._state.instances.get(iid)
            if seen.state == "collected" and found is not None and not found.value.collected:
                out.add(iid)
        return out

    async def stop_instance(
        self, instance_id: str, drain: bool = True, grace_s: float | None = None
    ) -> None:
        """Remove the instance from etcd and every route, then tell its host to stop it."""
        found = self._state.instances.get(instance_id)
        if found is None:
            raise NotFound(f"instance {instance_id} does not exist", instance=instance_id)
        record = found.value
        await self._removal.remove(record)
        self._fleet.unobserve(instance_id)
        await self.set_route(record.apartment, record.unit)
        grace = self.stop_grace_s if grace_s is None else grace_s
        self._fleet.send(record.host_id, StopInstance(instance_id, grace, drain))

    def stop_unwanted(self, host_id: str, instance_id: str, collect: bool = False) -> None:
        """Stop an instance a host runs that is not desired there (no etcd record), or
        (``collect``) collect one the leader recorded as collected."""
        self._fleet.send(host_id, StopInstance(instance_id, self.stop_grace_s, drain=True,
                                               collect=collect))

    # -- routing ---------------------------------------------------------------------------

    async def set_split(
        self,
        apartment: str,
        unit: str,
        split: Mapping[str, float],
        building: str,
        service_port: int,
        health_path: str,
        sticky: bool = False,
    ) -> RouteRecord:
        """Record the unit's traffic split (compare-and-swap) and send the route everywhere;
        ``sticky`` keeps clients on the version that served them."""
        if abs(sum(split.values()) - 100) > 1e-6:
            raise InvalidArgument(f"traffic split must add up to 100, got {dict(split)}")
        route = RouteRecord(apartment, unit, building, service_port, health_path, dict(split),
                            self._clock.now(), sticky)
        current = self._state.routes.get((apartment, unit))
        txn = Txn().require(self._layout.route(apartment, unit),
                            current.mod_revision if current else 0)
        txn.put(self._layout.route(apartment, unit), encode(route))
        await self._writes.commit(txn)
        await self.set_route(apartment, unit)
        return route

    def route_command(self, apartment: str, unit: str) -> SetRoute | None:
        route = self._state.routes.get((apartment, unit))
        if route is None:
            return None
        instances = self._state.instances_of(apartment, unit)
        observed = {}
        for inst in instances:
            seen = self._known.known_state(inst.instance_id)
            if seen is not None:
                observed[inst.instance_id] = seen
        hosts = {i.host_id: self._state.hosts[i.host_id].value
                 for i in instances if i.host_id in self._state.hosts}
        command = plan_route(route.value, instances, observed, hosts,
                             self._state.lost_host_ids(), PAUSED_RETRY_AFTER_S)
        if self.protected is not None:
            command = replace(command, protected_versions=self.protected.protected_versions(
                apartment, unit))
        if self.waking is not None and self.waking.holds(apartment, unit):
            command = replace(command, wake_on_request=True)
        return command

    async def set_route(self, apartment: str, unit: str) -> int:
        """SetUnitRoute to every connected host of the unit's building (one command id)."""
        self._writes.require_lead()
        command = self.route_command(apartment, unit)
        self._dirty_routes.discard((apartment, unit))
        if command is None:
            return 0
        route = self._state.routes[(apartment, unit)].value
        hosts = [h.host_id for h in self._state.hosts_in(route.building)]
        return self._fleet.broadcast(hosts, command)

    def mark_building_routes_dirty(self, building: str) -> None:
        """Every route of ``building`` goes out at the next flush (a host registered)."""
        for key, route in self._state.routes.items():
            if route.value.building == building:
                self._dirty_routes.add(key)

    def mark_route_dirty(self, apartment: str, unit: str) -> None:
        self._dirty_routes.add((apartment, unit))

    async def flush_routes(self) -> int:
        """Send the routes of units whose instances changed since the last flush."""
        dirty, self._dirty_routes = self._dirty_routes, set()
        sent = 0
        for apartment, unit in sorted(dirty):
            sent += await self.set_route(apartment, unit)
        return sent
