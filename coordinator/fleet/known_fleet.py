"""What the leader knows of the fleet: etcd's records joined with what agents reported.

``ClusterState`` holds what etcd says (desired instances, persisted statuses, hosts);
``Fleet`` holds what connected agents reported to this leader. Reads that need both (the
freshest state of an instance, the hosts placement may use) are answered here.
"""

from __future__ import annotations

from common.stream_messages import ObservedInstance
from coordinator.fleet.sessions import Fleet
from coordinator.state.cluster_state import ClusterState
from coordinator.state.records import HostHealth, HostRecord

__all__ = ["KnownFleet"]


class KnownFleet:
    def __init__(self, state: ClusterState, fleet: Fleet) -> None:
        self._state = state
        self._fleet = fleet

    def known_state(self, instance_id: str) -> ObservedInstance | None:
        """The freshest observation: this leader's memory, else the last persisted status."""
        seen = self._fleet.observed.get(instance_id)
        if seen is not None:
            return seen
        status = self._state.statuses.get(instance_id)
        record = self._state.instances.get(instance_id)
        if status is None or record is None:
            return None
        r = record.value
        return ObservedInstance(
            instance_id=instance_id, host_id=status.host_id, apartment=r.apartment,
            unit=r.unit, version=r.version, slot=r.slot, state=status.state,
            health_score=1.0 if status.healthy else 0.0, port=r.port,
            restarts=status.restarts, reason=status.reason,
        )

    def placeable_hosts(self, building: str) -> list[HostRecord]:
        """Hosts of ``building`` that are connected to this leader and alive."""
        return [
            host
            for host in self._state.hosts_in(building)
            if host.status != HostHealth.LOST
            and host.host_id in self._fleet.sessions
            and self._fleet.health.get(host.host_id, HostHealth.ALIVE) == HostHealth.ALIVE
        ]

    def image_kept(self, building: str, image: str) -> bool:
        """Whether a placeable host of ``building`` reported that it has ``image``."""
        return any(image in self._fleet.images.get(h.host_id, ())
                   for h in self.placeable_hosts(building))
