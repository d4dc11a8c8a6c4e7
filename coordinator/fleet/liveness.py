"""Host liveness as a pure function of when each host was last heard from.

A host is ``alive`` while its stream is open and it reported within 1.5 heartbeat
intervals. It turns ``suspect`` when its stream closes, or when it stays silent longer than
that on an open stream. A suspect host is ``lost`` once it has been silent for the grace
period; its instances are then placed again elsewhere. A host the leader has never heard
from (right after a leader change) gets a full heartbeat interval plus the grace period to
reconnect before it can be lost.

Mass silence is not mass failure: when more than ``max_silent_fraction`` of a building's
hosts are silent or were lost during this leader's term, no more are declared lost; that
looks like a network or control-plane problem (an overloaded or new leader), and moving
everything would only make it worse. Instances could not move within that building anyway.
A host with no instances placed on it (``empty``) still counts towards that share but is
never held: losing it moves nothing, and a lost host is what is forgotten later
(coordinator/fleet/forgetting.py), so silent hosts that hold nothing (a crowd of one-off
registrations) cannot stay suspect, and in etcd, forever.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from common.errors import InvalidArgument
from coordinator.state.records import HostHealth

__all__ = ["HostSeen", "LivenessChange", "LivenessPolicy", "assess", "plan_liveness"]

SLACK = 1.5
"""A report may be this many heartbeat intervals late before the host is suspect."""


@dataclass(frozen=True)
class LivenessPolicy:
    """How often agents speak and how long silence is tolerated; agents are told the
    intervals when they register."""

    heartbeat_interval: float = 10.0
    """Agents report at least this often (seconds)."""
    grace: float = 10.0
    """Seconds a suspect host has to come back before it is lost."""
    max_silent_fraction: float = 0.5
    """Above this share of a building's hosts silent at once, none is declared lost."""
    report_interval: float = 1.0
    """Agents send changes at most this often (seconds)."""

    def __post_init__(self) -> None:
        if self.heartbeat_interval <= 0 or self.grace < 0:
            raise InvalidArgument("heartbeat interval must be > 0 and grace >= 0")
        if not 0 < self.max_silent_fraction <= 1:
            raise InvalidArgument("max_silent_fraction must be in (0, 1]")

    @property
    def lease_ttl(self) -> int:
        """A host's liveness key outlives a missed heartbeat plus the grace period."""
        return max(2, math.ceil(SLACK * self.heartbeat_interval + self.grace))


@dataclass(frozen=True)
class HostSeen:
    """What the leader knows of one host's stream, in monotonic seconds."""

    last_seen: float
    connected: bool
    disconnected_at: float | None = None
    """When the stream closed (None: open, or never opened to this leader)."""


@dataclass(frozen=True)
class LivenessChange:
    """A host whose health changes now, and how long it has been silent (seconds)."""

    host_id: str
    before: HostHealth
    after: HostHealth
    silent_for: float


def assess(seen: HostSeen, now: float, policy: LivenessPolicy) -> HostHealth:
    late = seen.last_seen + SLACK * policy.heartbeat_interval
    if seen.connected and now <= late:
        return HostHealth.ALIVE
    silent_since = late if seen.disconnected_at is None else min(late, seen.disconnected_at)
    if now - silent_since >= policy.grace:
        return HostHealth.LOST
    return HostHealth.SUSPECT


def plan_liveness(
    seen: Mapping[str, HostSeen],
    current: Mapping[str, HostHealth],
    now: float,
    policy: LivenessPolicy,
    buildings: Mapping[str, str] | None = None,
    empty: Collection[str] = (),
) -> list[LivenessChange]:
    """The hosts whose health changes now, in host id order.

    ``buildings`` (host -> building) enables the mass-silence guard (module doc); hosts
    missing from it count as one building of their own. Hosts in ``empty`` hold no
    instances: the guard never holds them.
    """
    assessed = {h: assess(seen[h], now, policy) for h in seen}
    held = _held_buildings(assessed, current, buildings or {}, policy)
    changes = []
    for host_id in sorted(seen):
        before = current.get(host_id, HostHealth.ALIVE)
        after = assessed[host_id]
        held_here = (buildings or {}).get(host_id, host_id) in held and host_id not in empty
        if after == HostHealth.LOST and before != HostHealth.LOST and held_here:
            after = HostHealth.SUSPECT
        if after != before:
            changes.append(
                LivenessChange(host_id, before, after, max(0.0, now - seen[host_id].last_seen))
            )
    return changes


def _held_buildings(
    assessed: Mapping[str, HostHealth],
    current: Mapping[str, HostHealth],
    buildings: Mapping[str, str],
    policy: LivenessPolicy,
) -> set[str]:
    """Buildings where too many hosts are silent (or were lost this term) to lose more."""
    total: dict[str, int] = {}
    silent: dict[str, int] = {}
    for host_id, health in assessed.items():
        building = buildings.get(host_id, host_id)
        total[building] = total.get(building, 0) + 1
        if health != HostHealth.ALIVE or current.get(host_id) == HostHealth.LOST:
            silent[building] = silent.get(building, 0) + 1
    return {
        b for b, n in silent.items()
        if n > policy.max_silent_fraction * total[b] and total[b] > 1
    }
