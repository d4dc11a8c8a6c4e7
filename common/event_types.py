"""The types of the events agents report on the stream, defined once for both ends.

The agent's event bus publishes them (``agent.instances.events.AgentEvent``), the stream carries
them as ``ReportedEvent.type``, and the coordinator records and reacts to them (a
``recovery.escalated`` starts its own healing, for example). The types in
``COORDINATOR_ONLY`` are written by the coordinator alone (``AUDIT`` by
coordinator/api/audit.py, ``HOST_FORGOTTEN`` by coordinator/fleet/forgetter.py, the cordon
events by coordinator/fleet/cordons.py, the drain and decommission events by
coordinator/fleet/drains.py and decommission.py, the escalation events by
coordinator/fleet/escalations.py); an agent never reports them, and the coordinator
drops them from a report.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["COORDINATOR_ONLY", "EventType"]


class EventType(StrEnum):
    """Names of the events an agent emits."""

    STATE = "instance.state"
    """A lifecycle transition (details: from, to, reason)."""
    HEALTH = "instance.health"
    """Health flipped (details: healthy, score)."""
    REMOVED = "instance.removed"
    ADOPTED = "instance.adopted"
    EVICTED = "instance.evicted"
    CRASHED = "instance.crashed"
    START_FAILED = "instance.start_failed"
    """A start command could not be carried out (message: why)."""
    STOP_FAILED = "instance.stop_failed"
    TRAFFIC_SWITCH = "traffic.switch"
    """Traffic should move to a replacement (details: old/new container, address, port)."""
    LIMIT_EXCEEDED = "limit_exceeded"
    MEMORY_PRESSURE = "memory_pressure"
    MEMORY_LEAK = "memory_leak"
    CRASH_DUMP = "dump.crash"
    MEMORY_DUMP = "dump.memory"
    RECOVERY_ATTEMPT = "recovery.attempt"
    RECOVERY_SUCCESS = "recovery.success"
    RECOVERY_FAILURE = "recovery.failure"
    ESCALATION = "recovery.escalated"
    GC_COLLECTED = "gc.collected"
    GC_MEMORY = "gc.memory"
    GC_CACHE = "gc.cache"
    GC_FAILED = "gc.failed"
    """A requested garbage collection failed (details: kind)."""
    LIMIT_NOT_ENFORCED = "limit_not_enforced"
    IMAGE_PULL_STARTED = "image.pull_started"
    """A start needs an image this host lacks (details: image, registry)."""
    IMAGE_PULL_PROGRESS = "image.pull_progress"
    """A few per pull (details: image, bytes_done, bytes_total of the layers downloaded)."""
    IMAGE_PULLED = "image.pulled"
    """(details: image, registry, size in bytes, downloaded bytes, seconds)."""
    IMAGE_PULL_FAILED = "image.pull_failed"
    """(message and details.reason: the registry's error; details: image, seconds)."""
    AUDIT = "audit"
    """A mutating admin call, written by the coordinator (details: caller, caller_source,
    peer, method, outcome, error, and the request's essentials; coordinator/api/audit.py)."""
    HOST_FORGOTTEN = "host.forgotten"
    """A host lost longer than ``forget_host_after``, with no instance left on it, had its
    records removed from etcd by the coordinator (details: building, lost_for seconds)."""
    HOST_CORDONED = "host.cordoned"
    """An operator cordoned the host: no new placements on it (details: building, reason)."""
    HOST_UNCORDONED = "host.uncordoned"
    """An operator made a cordoned host placeable again (details: building)."""
    UNIT_STOPPED = "unit.stopped"
    """An operator stopped the unit: its instances drain and stop, its versions and history
    stay (details: building, stopped_version, instances)."""
    UNIT_DELETED = "unit.deleted"
    """An operator deleted a stopped unit: records, versions, rollouts and route are gone
    (details: versions, rollouts)."""
    UNIT_SCALED = "unit.scaled"
    """An operator changed the replica count of the unit's stable version without a rollout
    (details: version, from_replicas, replicas)."""
    UNIT_REBALANCE_STARTED = "unit.rebalance_started"
    """A rebalance of the unit's spread started, asked by an operator or automatic after the
    spread stayed uneven for the grace period (details: reason, moves)."""
    UNIT_REBALANCE_ENDED = "unit.rebalance_ended"
    """A rebalance ended: done (evenly spread) or stopped (a rollout or drain began, or a
    move failed; message: why) (details: state, moved)."""
    HOST_DRAIN_STARTED = "host.drain_started"
    """An operator started draining the host (details: building, deadline)."""
    HOST_DRAIN_ENDED = "host.drain_ended"
    """A drain ended: drained, stopped at its deadline or blocked (details: state, moved,
    left; message: what is left and why)."""
    INSTANCE_REPLACED = "instance.escalation_replaced"
    """An escalated instance (its agent gave up healing it) was placed once more on another
    host (details: replacement, from_host, to_host; message: why)."""
    VERSION_FAILING = "unit.version_failing"
    """A version's re-placed instance escalated too: the version is marked failing for the
    unit and its instances are not re-placed again (message: why)."""
    HOST_DECOMMISSIONED = "host.decommissioned"
    """A drained host was removed from the cluster with its records (details: building)."""
    # -- pause and resume (issue 17) --
    PAUSED = "instance.paused"
    """An agent froze the instance's container (details: container, reason)."""
    RESUMED = "instance.resumed"
    """An agent thawed a paused instance: same process, same memory (details: container)."""
    UNIT_PAUSED = "unit.paused"
    """An operator paused instances of the unit (details: instances, whole: "true" when
    every instance is paused)."""
    UNIT_RESUMED = "unit.resumed"
    """An operator resumed paused instances of the unit (details: instances)."""
    UNIT_COLLECTED = "unit.collected"
    """No request reached the unit on any host for its idle timeout: its instances were
    collected (scaled to zero; details: version, instances, idle_s, timeout_s)."""
    UNIT_WOKEN = "unit.woken"
    """Collected instances of the unit were started again (details: why: wake, deploy or
    request, instances)."""
    COLLECTED_MOVED = "instance.collected_moved"
    """A collected instance of a host lost for ``forget_host_after`` was placed on another
    host, still collected (its state backup stayed behind), so the host can be forgotten
    (details: from_instance, from_host, host_id)."""


COORDINATOR_ONLY = frozenset({EventType.AUDIT, EventType.HOST_FORGOTTEN,
                              EventType.HOST_CORDONED, EventType.HOST_UNCORDONED,
                              EventType.UNIT_STOPPED, EventType.UNIT_DELETED,
                              EventType.UNIT_SCALED, EventType.INSTANCE_REPLACED,
                              EventType.VERSION_FAILING, EventType.UNIT_REBALANCE_STARTED,
                              EventType.UNIT_REBALANCE_ENDED,
                              EventType.HOST_DRAIN_STARTED, EventType.HOST_DRAIN_ENDED,
                              EventType.HOST_DECOMMISSIONED,
                              EventType.UNIT_PAUSED, EventType.UNIT_RESUMED,
                              EventType.UNIT_COLLECTED, EventType.UNIT_WOKEN,
                              EventType.COLLECTED_MOVED})
"""Event types only the coordinator writes; an agent's report of one is dropped."""
