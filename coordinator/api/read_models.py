"""Units, hosts and instances as the Admin API shows them (read models, no protobuf).

Built from the watch-fed cache, which every coordinator holds, and from what this
coordinator's agents reported while it leads (a follower shows the persisted statuses).
The Admin servicer only converts these to protobuf; the rollout status has its own read
model in coordinator/rollouts/status.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from common.clock import Clock
from common.errors import NotFound
from common.resources import Resources
from common.stream_messages import ObservedInstance
from coordinator.fleet.sessions import Fleet
from coordinator.state.cluster_state import ClusterState
from coordinator.state.leadership import Leadership
from coordinator.state.records import (
    HostHealth,
    HostRecord,
    InstanceRecord,
    UnitRecord,
    VersionRecord,
)

__all__ = [
    "ClusterReads",
    "HostListing",
    "InstanceListing",
    "UnitCatalog",
    "UnitDetail",
    "UnitListing",
]


class UnitCatalog(Protocol):
    """The unit reads of coordinator/registry.py that the listings need."""

    def units(self, apartment: str = "") -> list[UnitRecord]: ...

    def unit(self, apartment: str, unit: str) -> UnitRecord: ...

    def latest(self, apartment: str, unit: str) -> VersionRecord | None: ...


@dataclass(frozen=True)
class UnitListing:
    unit: UnitRecord
    instances: int
    """Desired instances of the unit (any version)."""
    paused: int = 0
    """Of those, paused by an operator."""
    collected: int = 0
    """Of those, scaled to zero by idle collection."""

    @classmethod
    def of(cls, unit: UnitRecord, instances: Iterable[InstanceRecord]) -> UnitListing:
        found = list(instances)
        return cls(unit, len(found), sum(i.paused for i in found),
                   sum(i.collected for i in found))


@dataclass(frozen=True)
class InstanceListing:
    """A desired instance with its freshest observation, or an observed one that is no
    longer desired (being stopped): at least one of the two is set."""

    record: InstanceRecord | None
    observed: ObservedInstance | None


@dataclass(frozen=True)
class UnitDetail:
    unit: UnitListing
    instances: tuple[InstanceListing, ...]
    latest: VersionRecord | None


@dataclass(frozen=True)
class HostListing:
    host: HostRecord
    status: str
    """alive, suspect or lost (this leader's view; a follower's from etcd)."""
    allocated: Resources
    """The sum of what the host's instances hold."""
    last_seen: float
    """Epoch seconds the host was last heard from (as far as this coordinator knows)."""


@dataclass(frozen=True)
class ClusterReads:
    state: ClusterState
    fleet: Fleet
    """This leader's sessions and observations (empty on a follower)."""
    leadership: Leadership
    clock: Clock
    known_state: Callable[[str], ObservedInstance | None]
    """An instance's freshest observation (KnownFleet.known_state)."""
    registry: UnitCatalog

    # -- units -----------------------------------------------------------------------------

    def units(self, apartment: str = "") -> list[UnitListing]:
        return [UnitListing.of(u, self.state.instances_of(u.apartment, u.unit))
                for u in self.registry.units(apartment)]

    def unit(self, apartment: str, unit: str) -> UnitDetail:
        record = self.registry.unit(apartment, unit)
        instances = self.instances(apartment=apartment, unit=unit)
        listing = UnitListing.of(record, [i.record for i in instances if i.record is not None])
        return UnitDetail(listing, tuple(instances),
                          self.registry.latest(apartment, unit))

    # -- hosts -----------------------------------------------------------------------------

    def hosts(self, building: str = "") -> list[HostListing]:
        found = []
        for host_id in sorted(self.state.hosts):
            host = self.state.hosts[host_id].value
            if building and host.building != building:
                continue
            allocations, _ = self.state.allocation_of(host_id)
            allocated = Resources()
            for allocation in allocations.values():
                allocated = allocated + allocation.resources
            status, last_seen = self._host_status(host)
            found.append(HostListing(host, status, allocated, last_seen))
        return found

    def host(self, host_id: str) -> HostListing:
        """One host as ``hosts`` lists it (NotFound when it is not registered)."""
        found = self.state.hosts.get(host_id)
        if found is None:
            raise NotFound(f"host {host_id!r} does not exist", host=host_id)
        return next(h for h in self.hosts(found.value.building) if h.host.host_id == host_id)

    def _host_status(self, host: HostRecord) -> tuple[str, float]:
        if host.status == "lost":
            return "lost", host.status_changed_at
        if self.leadership.is_leader:
            seen = self.fleet.seen.get(host.host_id)
            health = self.fleet.health.get(host.host_id, HostHealth.SUSPECT)
            last = host.registered_at
            if seen is not None:
                last = self.clock.now() - (self.clock.monotonic() - seen.last_seen)
            return str(health), last
        alive = host.host_id in self.state.alive
        return ("alive" if alive else "suspect"), host.status_changed_at

    # -- instances -------------------------------------------------------------------------

    def instances(self, host_id: str = "", apartment: str = "", unit: str = ""
                  ) -> list[InstanceListing]:
        """Desired instances (filtered), then observed ones no longer desired."""
        def wanted(h: str, a: str, u: str) -> bool:
            return ((not host_id or h == host_id) and (not apartment or a == apartment)
                    and (not unit or u == unit))

        if host_id:
            records = self.state.instances_on(host_id)
        elif apartment and unit:
            records = self.state.instances_of(apartment, unit)
        else:
            records = [self.state.instances[i].value for i in sorted(self.state.instances)]
        found = [InstanceListing(r, self.fleet.freshest(r.instance_id)
                                 or self.known_state(r.instance_id))
                 for r in records if wanted(r.host_id, r.apartment, r.unit)]
        ids = self.fleet.observed_on(host_id) if host_id else sorted(self.fleet.observed)
        for iid in ids:  # observed, but placed nowhere
            observed = None if iid in self.state.instances else self.fleet.freshest(iid)
            if observed is not None and observed.state != "stopped" and wanted(
                    observed.host_id, observed.apartment, observed.unit):
                found.append(InstanceListing(None, observed))
        return found
