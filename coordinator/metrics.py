"""The coordinator's Prometheus metrics (names and meanings: docs/metrics.md).

Fleet figures are read from the coordinator's own state when Prometheus scrapes (a
collector over ``ClusterState``, ``Fleet`` and ``Leadership``), so nothing has to remember
to update them. Admin calls and etcd requests are counted as they end, fed by
``CallMetricsInterceptor`` and ``MeasuredStore`` through ``observe_call``/``observe_etcd``.

``fleet_families`` is pure: it turns a ``FleetSnapshot`` into metric families.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from common.clock import Clock
from coordinator.fleet.liveness import HostSeen
from coordinator.fleet.sessions import Fleet
from coordinator.rollouts.record import (
    Measurement,
    Phase,
    RolloutRecord,
    StepRecord,
    decode_record,
)
from coordinator.state.cluster_state import ClusterState
from coordinator.state.leadership import Leadership
from coordinator.state.records import HostHealth

__all__ = ["CoordinatorMetrics", "FleetSnapshot", "InstanceRow", "fleet_families"]

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
"""Seconds: etcd requests and admin calls take milliseconds, a slow one seconds."""
NO_STATUS = "placed"
"""An instance's state before its host reported any."""
STEP_OUTCOMES = ("active", "passed", "failed", "inconclusive", "skipped")
"""``StepRecord.outcome`` values: the analysis verdicts of a rollout's steps."""


@dataclass(frozen=True)
class InstanceRow:
    apartment: str
    unit: str
    version: str
    state: str


@dataclass(frozen=True)
class FleetSnapshot:
    """What the fleet metrics are made of, read from the coordinator at one moment."""

    coordinator_id: str
    release: str
    leader: bool
    now: float
    """Monotonic seconds, like ``seen``."""
    hosts: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """host id -> (building, status)."""
    connected: frozenset[str] = frozenset()
    """Hosts with an open stream to this coordinator."""
    seen: Mapping[str, HostSeen] = field(default_factory=dict)
    instances: tuple[InstanceRow, ...] = ()
    rollouts: tuple[RolloutRecord, ...] = ()


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def fleet_families(snap: FleetSnapshot) -> list[Metric]:
    """The fleet's metric families (pure)."""
    info = InfoMetricFamily("landlord_coordinator", "This coordinator",
                            labels=["coordinator", "release"])
    info.add_metric([snap.coordinator_id, snap.release], {})
    leader = _gauge("landlord_coordinator_leader", "1 while this coordinator leads, else 0")
    leader.add_metric([], 1.0 if snap.leader else 0.0)
    connected = _gauge("landlord_agents_connected",
                       "Agents with an open stream to this coordinator (only the leader "
                       "takes streams)")
    connected.add_metric([], float(len(snap.connected)))
    age = _gauge("landlord_agent_last_report_age_seconds",
                 "Seconds since the host's agent last reported (leader only)", ["host"])
    for host_id, seen in sorted(snap.seen.items()):
        age.add_metric([host_id], max(0.0, snap.now - seen.last_seen))
    hosts = _gauge("landlord_hosts", "Hosts by building and health", ["building", "status"])
    tally = Tally(snap.hosts.values())
    for building in sorted({b for b, _ in snap.hosts.values()}):
        for status in HostHealth:
            hosts.add_metric([building, status.value], float(tally[(building, status.value)]))
    instances = _gauge("landlord_instances", "Placed instances by unit, version and the "
                       "state their host reported", ["apartment", "unit", "version", "state"])
    for row, count in sorted(Tally(snap.instances).items(), key=lambda item: (
            item[0].apartment, item[0].unit, item[0].version, item[0].state)):
        instances.add_metric([row.apartment, row.unit, row.version, row.state], float(count))
    return [info, leader, connected, age, hosts, instances, *rollout_families(snap.rollouts)]


def rollout_families(records: Iterable[RolloutRecord]) -> list[Metric]:
    """Rollouts by phase (every record kept), and each active rollout's step and target
    split (pure)."""
    records = list(records)
    phases = _gauge("landlord_rollouts", "Rollout records by phase (paused ones under "
                    "their phase)", ["phase"])
    tally = Tally(r.phase.value for r in records)
    for phase in Phase:
        phases.add_metric([phase.value], float(tally[phase.value]))
    labels = ["apartment", "unit", "rollout", "from_version", "to_version"]
    step = _gauge("landlord_rollout_step", "Index of the active rollout's current traffic "
                  "step (0: the first)", labels)
    paused = _gauge("landlord_rollout_paused", "1 while an operator paused the rollout",
                    labels)
    weight = _gauge("landlord_rollout_target_weight_ratio", "Share of the unit's traffic "
                    "the rollout's current step gives each version (0 to 1)",
                    [*labels, "version"])
    verdicts = _gauge("landlord_rollout_steps", "The active rollout's steps by analysis "
                      "verdict (active, passed, failed, inconclusive, skipped)",
                      [*labels, "outcome"])
    analysis = [_gauge(name, doc, [*labels, "side"]) for name, doc in _ANALYSIS]
    for record in sorted((r for r in records if r.active),
                         key=lambda r: (r.apartment, r.unit, r.rollout_id)):
        values = [record.apartment, record.unit, record.rollout_id, record.from_version,
                  record.to_version]
        step.add_metric(values, float(record.step_index))
        paused.add_metric(values, 1.0 if record.paused else 0.0)
        for version, percent in sorted(record.split().items()):
            weight.add_metric([*values, version], percent / 100.0)
        tally = Tally(s.outcome for s in record.steps)
        for outcome in STEP_OUTCOMES:
            verdicts.add_metric([*values, outcome], float(tally[outcome]))
        judged = _last_measured(record.steps)
        for side, measured in (("canary", judged.canary if judged else None),
                               ("stable", judged.stable if judged else None)):
            if measured is not None:
                for family, value in zip(analysis, _analysis_values(measured), strict=True):
                    if value is not None:
                        family.add_metric([*values, side], value)
    return [phases, step, paused, weight, verdicts, *analysis]


_ANALYSIS = (
    ("landlord_rollout_analysis_requests_per_second", "Request rate of each side (canary: "
     "the new version, stable: the old) in the window the analysis last judged"),
    ("landlord_rollout_analysis_error_ratio", "Share of requests that failed in that window"),
    ("landlord_rollout_analysis_latency_p95_seconds", "95th percentile latency in that "
     "window"),
)


def _last_measured(steps: Iterable[StepRecord]) -> StepRecord | None:
    """The latest step the analysis measured (the current one once it has figures)."""
    measured = [s for s in steps if s.canary is not None or s.stable is not None]
    return max(measured, key=lambda s: s.index) if measured else None


def _analysis_values(measured: Measurement) -> tuple[float | None, ...]:
    return (measured.throughput_rps, measured.error_rate,
            None if measured.p95_ms is None else measured.p95_ms / 1000.0)


class _FleetCollector(Collector):
    """Reads the snapshot from the live objects at each scrape."""

    def __init__(self, owner: CoordinatorMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        yield from fleet_families(self._owner.snapshot())


class CoordinatorMetrics:
    """One coordinator's registry and the instruments fed as things happen."""

    def __init__(self, coordinator_id: str, release: str = "") -> None:
        self.coordinator_id = coordinator_id
        self.release = release
        self.registry = CollectorRegistry(auto_describe=False)
        self.admin_calls = Counter(
            "landlord_admin_calls", "Admin API calls by method and final gRPC status code",
            ["method", "code"], registry=self.registry)
        self.admin_call_seconds = Histogram(
            "landlord_admin_call_duration_seconds", "How long admin calls took (streams: "
            "how long they were watched)", ["method"], buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.etcd_seconds = Histogram(
            "landlord_etcd_request_duration_seconds", "How long etcd requests took, by "
            "operation", ["operation"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.etcd_failures = Counter(
            "landlord_etcd_request_failures", "etcd requests that failed (etcd unreachable "
            "or refusing), by operation", ["operation"], registry=self.registry)
        self.placement_refusals = Counter(
            "landlord_placement_refusals", "Deploys and placements refused for want of "
            "room, by the short resource (healing's retries included)", ["resource"],
            registry=self.registry)
        self._state: ClusterState | None = None
        self._fleet: Fleet | None = None
        self._leadership: Leadership | None = None
        self._clock: Clock | None = None
        self._decoded: dict[tuple[str, str, str], tuple[int, RolloutRecord | None]] = {}

    def watch(self, state: ClusterState, fleet: Fleet, leadership: Leadership,
              clock: Clock) -> None:
        """Serve the fleet figures of these objects from now on."""
        self._state, self._fleet, self._leadership, self._clock = (
            state, fleet, leadership, clock)
        self.registry.register(_FleetCollector(self))

    # -- fed as things happen --------------------------------------------------------------

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.admin_calls.labels(method, code).inc()
        self.admin_call_seconds.labels(method).observe(seconds)

    def observe_refusal(self, resource: str) -> None:
        self.placement_refusals.labels(resource or "unknown").inc()

    def observe_etcd(self, operation: str, seconds: float | None, failed: bool) -> None:
        if seconds is not None:
            self.etcd_seconds.labels(operation).observe(seconds)
        if failed:
            self.etcd_failures.labels(operation).inc()

    # -- read at scrape time ---------------------------------------------------------------

    def snapshot(self) -> FleetSnapshot:
        state, fleet, leadership, clock = (self._state, self._fleet, self._leadership,
                                           self._clock)
        if state is None or fleet is None or leadership is None or clock is None:
            return FleetSnapshot(self.coordinator_id, self.release, False, 0.0)
        hosts = {}
        for host_id, found in state.hosts.items():
            health = fleet.health.get(host_id, found.value.status)
            hosts[host_id] = (found.value.building, HostHealth(health).value)
        rows = []
        for iid, placed in state.instances.items():
            record = placed.value
            status = state.statuses.get(iid)
            rows.append(InstanceRow(record.apartment, record.unit, record.version,
                                    status.state if status is not None else NO_STATUS))
        return FleetSnapshot(
            coordinator_id=self.coordinator_id, release=self.release,
            leader=leadership.is_leader, now=clock.monotonic(), hosts=hosts,
            connected=frozenset(fleet.sessions), seen=dict(fleet.seen),
            instances=tuple(rows), rollouts=tuple(self._rollouts(state)))

    def _rollouts(self, state: ClusterState) -> Iterator[RolloutRecord]:
        """Every rollout record, decoded once per revision."""
        kept: dict[tuple[str, str, str], tuple[int, RolloutRecord | None]] = {}
        for (apartment, unit), records in list(state.rollouts.items()):
            for rollout_id, stored in list(records.items()):
                key = (apartment, unit, rollout_id)
                cached = self._decoded.get(key)
                if cached is None or cached[0] != stored.mod_revision:
                    try:
                        cached = (stored.mod_revision, decode_record(stored.value))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.debug("metrics skip an unreadable rollout %s: %s", key, exc)
                        cached = (stored.mod_revision, None)
                kept[key] = cached
                if cached[1] is not None:
                    yield cached[1]
        self._decoded = kept
