"""The agent's Prometheus metrics (names and meanings: docs/metrics.md).

Two sources. Events (recoveries, escalations, dumps, GC, limits, image pulls) are counted as
the event bus publishes them (``on_event``, a bus listener that never misses one).
Everything that is a state (instances by state, per-instance usage as the resource monitor
last sampled it, the coordinator stream, the request log) is read when Prometheus scrapes,
by a collector over the service, the stream and the data plane. HAProxy's dropped log
lines need a call to its admin socket, made by ``refresh`` just before each scrape.

``event_increments``, ``instance_families`` and ``server_weights`` are pure.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.dataplane.model import DataPlaneSpec
from agent.dataplane.server_counters import ServerCount
from agent.instances.events import AgentEvent, EventType
from agent.instances.store import InstanceRecord
from common.gc_kinds import GcKind
from common.lifecycle import InstanceState
from common.recovery import FailureKind

__all__ = ["AgentMetrics", "CountFigures", "Increment", "PlaneFigures", "StreamFigures", "UsageRow",
           "event_increments", "instance_families", "request_families", "server_weights"]

log = logging.getLogger(__name__)

DROPPED_LOGS_TIMEOUT_S = 1.0
COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
"""Seconds: a route change takes milliseconds, a start with an image pull minutes."""


class StreamFigures(Protocol):
    """What the metrics read of the coordinator stream (``CoordinatorStream``)."""

    connected: asyncio.Event
    sessions: int

    @property
    def reports_sent(self) -> int: ...

    @property
    def commands_run(self) -> int: ...


class CountFigures(Protocol):
    """What the metrics read of HAProxy's exact counts (``RequestCounts``)."""

    sample_every: int

    @property
    def totals(self) -> Mapping[tuple[str, str], ServerCount]: ...

    @property
    def sampled_lines(self) -> int: ...


@runtime_checkable
class PlaneFigures(Protocol):
    """What the metrics read of the data plane (``DataPlane``)."""

    restarts: int

    @property
    def counts(self) -> CountFigures: ...

    @property
    def log_lines_received(self) -> int: ...

    @property
    def spec(self) -> DataPlaneSpec: ...

    async def dropped_logs(self) -> int: ...


@dataclass(frozen=True)
class Increment:
    """Add ``amount`` to counter ``counter`` at ``labels``."""

    counter: str
    labels: tuple[str, ...]
    amount: float = 1.0


_RECOVERY_OUTCOMES = {EventType.RECOVERY_ATTEMPT: "attempted",
                      EventType.RECOVERY_SUCCESS: "succeeded",
                      EventType.RECOVERY_FAILURE: "failed"}
_DUMPS = {EventType.CRASH_DUMP: "crash", EventType.MEMORY_DUMP: "memory"}
_PULLS = {EventType.IMAGE_PULLED: "succeeded", EventType.IMAGE_PULL_FAILED: "failed"}
_LIMITS = (EventType.LIMIT_EXCEEDED, EventType.MEMORY_PRESSURE, EventType.MEMORY_LEAK,
           EventType.LIMIT_NOT_ENFORCED)


def _number(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0


def event_increments(event: AgentEvent) -> list[Increment]:
    """The counters one event moves (pure)."""
    details, kind = event.details, event.type
    if kind in _RECOVERY_OUTCOMES:
        return [Increment("recoveries", (str(details.get("kind", "")),
                                         _RECOVERY_OUTCOMES[EventType(kind)]))]
    if kind == EventType.CRASHED:
        return [Increment("crashes", ("true" if details.get("oom_killed") else "false",))]
    if kind == EventType.ESCALATION:
        return [Increment("escalations", (str(details.get("kind", "")),))]
    if kind in _DUMPS:
        return [Increment("dumps", (_DUMPS[EventType(kind)],))]
    if kind in _LIMITS:
        return [Increment("limit_events", (str(details.get("resource", "")), kind))]
    if kind in _PULLS:
        return [Increment("image_pulls", (_PULLS[EventType(kind)],))]
    if kind == EventType.GC_COLLECTED:
        return [Increment("gc_actions", (GcKind.UNUSED,)),
                Increment("gc_instances", (GcKind.UNUSED,))]
    if kind == EventType.GC_MEMORY:
        freed = _number(details.get("cache_before")) - _number(details.get("cache_after"))
        return [Increment("gc_actions", (GcKind.MEMORY,)),
                Increment("gc_bytes", (GcKind.MEMORY,), max(0.0, freed))]
    if kind == EventType.GC_CACHE:
        removed = [item for item in details.get("removed") or () if isinstance(item, dict)]
        return [Increment("gc_actions", (GcKind.CACHE,), float(len(removed))),
                Increment("gc_bytes", (GcKind.CACHE,),
                          sum(_number(item.get("size")) for item in removed))]
    return []


@dataclass(frozen=True)
class UsageRow:
    """One instance and its last resource sample (``ResourceMonitor.figures``)."""

    instance: str
    apartment: str
    unit: str
    version: str
    state: str
    figures: Mapping[str, Any]


_USAGE = (  # (metric, figure key, scale, help, counter?)
    ("landlord_instance_cpu_seconds", "cpu_usage_ns", 1e-9,
     "CPU time the instance's container used", True),
    ("landlord_instance_cpu_throttled_periods", "cpu_throttled", 1.0,
     "CFS periods in which the container was throttled", True),
    ("landlord_instance_memory_usage_bytes", "memory_usage", 1.0,
     "Memory the container's cgroup uses, page cache included", False),
    ("landlord_instance_memory_working_set_bytes", "memory_working_set", 1.0,
     "Memory usage less inactive page cache (what the OOM killer looks at)", False),
    ("landlord_instance_memory_limit_bytes", "memory_limit", 1.0,
     "The container's memory limit (absent when unlimited)", False),
    ("landlord_instance_pids", "pids", 1.0, "Processes and threads in the container", False),
    ("landlord_instance_io_read_bytes", "io_read_bytes", 1.0,
     "Bytes the container read from block devices", True),
    ("landlord_instance_io_write_bytes", "io_write_bytes", 1.0,
     "Bytes the container wrote to block devices", True),
)


def instance_families(rows: Iterable[UsageRow]) -> list[Metric]:
    """Instances by state and each sampled instance's usage (pure)."""
    rows = sorted(rows, key=lambda r: r.instance)
    states = GaugeMetricFamily("landlord_agent_instances", "Instances on this host by "
                               "lifecycle state", labels=["state"])
    tally = Tally(row.state for row in rows)
    for state in InstanceState:
        states.add_metric([state.value], float(tally[state.value]))
    out: list[Metric] = [states]
    labels = ["instance_id", "apartment", "unit", "version"]
    for name, key, scale, doc, counter in _USAGE:
        family = (CounterMetricFamily(name, doc, labels=labels) if counter else
                  GaugeMetricFamily(name, doc, labels=labels))
        for row in rows:
            value = row.figures.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                family.add_metric([row.instance, row.apartment, row.unit, row.version],
                                  float(value) * scale)
        out.append(family)
    return out


class _StateCollector(Collector):
    def __init__(self, owner: AgentMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        yield from self._owner.state_families()


class AgentMetrics:
    """One agent's registry, its event counters and its scrape-time figures."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.counters: dict[str, Counter] = {
            "recoveries": Counter("landlord_agent_recoveries", "Recovery steps by failure "
                                  "kind and outcome (attempted, succeeded, failed)",
                                  ["kind", "outcome"], registry=r),
            "crashes": Counter("landlord_agent_container_crashes", "Containers that exited "
                               "unexpectedly, by whether the OOM killer ended them",
                               ["oom_killed"], registry=r),
            "escalations": Counter("landlord_agent_escalations", "Instances the agent gave "
                                   "up recovering and handed to the coordinator", ["kind"],
                                   registry=r),
            "dumps": Counter("landlord_agent_dumps", "Crash and memory dumps written",
                             ["kind"], registry=r),
            "limit_events": Counter("landlord_agent_limit_events", "Limit events by "
                                    "resource and event type", ["resource", "type"],
                                    registry=r),
            "image_pulls": Counter("landlord_agent_image_pulls", "Image pulls by outcome",
                                   ["outcome"], registry=r),
            "gc_actions": Counter("landlord_agent_gc_actions", "Things garbage collection "
                                  "acted on: idle instances removed (unused), instances' "
                                  "page cache reclaimed (memory), dumps, containers and "
                                  "images evicted (cache)", ["kind"], registry=r),
            "gc_bytes": Counter("landlord_agent_gc_freed_bytes", "Bytes garbage collection "
                                "freed (memory: page cache; cache: evicted items' size)",
                                ["kind"], registry=r),
            "gc_instances": Counter("landlord_agent_gc_freed_instances", "Idle instances "
                                    "garbage collection removed", ["kind"], registry=r),
            "wake_asks": Counter("landlord_agent_wake_asks", "Requests HAProxy found no "
                                 "usable server for, by the agent's answer: held (the unit "
                                 "is collected and waking) or not_held (503 at once)",
                                 ["answer"], registry=r),
            "wakes_sent": Counter("landlord_agent_wakes_sent", "Wakes of collected units "
                                  "asked of the coordinator (at most one per unit every "
                                  "2 s while requests are held)", registry=r),
        }
        self.command_seconds = Histogram(
            "landlord_agent_command_duration_seconds", "How long coordinator commands took "
            "on this agent, by kind and outcome (succeeded, failed)", ["kind", "outcome"],
            buckets=COMMAND_BUCKETS, registry=r)
        # Every known label set shows up at 0 from the start: Prometheus takes a series'
        # first sample as its baseline, so without a 0 before it the first recovery or
        # escalation of an agent's life would be invisible to increase() and rate().
        for kind in GcKind:
            for name in ("gc_actions", "gc_bytes"):
                self.counters[name].labels(kind.value)
        self.counters["gc_instances"].labels(GcKind.UNUSED.value)
        for failure in FailureKind:
            self.counters["escalations"].labels(failure.value)
            for outcome in _RECOVERY_OUTCOMES.values():
                self.counters["recoveries"].labels(failure.value, outcome)
        for oom in ("true", "false"):
            self.counters["crashes"].labels(oom)
        for dump in _DUMPS.values():
            self.counters["dumps"].labels(dump)
        for answer in ("held", "not_held"):
            self.counters["wake_asks"].labels(answer)
        self._records: Callable[[], Iterable[InstanceRecord]] | None = None
        self._figures: Callable[[str], Mapping[str, Any]] = lambda _: {}
        self._stream: StreamFigures | None = None
        self._plane: PlaneFigures | None = None
        self._dropped_logs: int | None = None

    def on_event(self, event: AgentEvent) -> None:
        """An ``EventBus`` listener."""
        for step in event_increments(event):
            self.counters[step.counter].labels(*step.labels).inc(step.amount)

    def observe_command(self, kind: str, ok: bool, seconds: float) -> None:
        """A ``StreamAdapter.command_timed`` hook."""
        self.command_seconds.labels(kind, "succeeded" if ok else "failed").observe(seconds)

    def count_wake(self, held: bool, sent: bool) -> None:
        """A ``StreamAdapter.wake_counted`` hook."""
        self.counters["wake_asks"].labels("held" if held else "not_held").inc()
        if sent:
            self.counters["wakes_sent"].inc()

    def watch(self, records: Callable[[], Iterable[InstanceRecord]],
              figures: Callable[[str], Mapping[str, Any]],
              stream: StreamFigures | None = None, plane: PlaneFigures | None = None) -> None:
        """Serve these figures from now on: the host's instance records, each one's last
        resource sample (``ResourceMonitor.figures``), the stream and the data plane."""
        self._records, self._figures = records, figures
        self._stream, self._plane = stream, plane
        self.registry.register(_StateCollector(self))

    async def refresh(self) -> None:
        """Ask HAProxy for its dropped log lines (before a scrape)."""
        if self._plane is None:
            return
        try:
            self._dropped_logs = await asyncio.wait_for(self._plane.dropped_logs(),
                                                        DROPPED_LOGS_TIMEOUT_S)
        except Exception as exc:  # HAProxy down: the figure is left out of this scrape
            log.debug("cannot read haproxy's dropped log lines: %s", exc)
            self._dropped_logs = None

    def state_families(self) -> list[Metric]:
        out: list[Metric] = []
        if self._records is not None:
            out += instance_families(
                UsageRow(r.instance_id, r.spec.apartment, r.spec.unit, r.spec.version,
                         r.lifecycle.state.value, self._figures(r.instance_id))
                for r in self._records())
        if self._stream is not None:
            out += _stream_families(self._stream)
        if self._plane is not None:
            out += _plane_families(self._plane, self._dropped_logs)
        return out


def _stream_families(stream: StreamFigures) -> list[Metric]:
    connected = GaugeMetricFamily("landlord_agent_stream_connected", "1 while the agent "
                                  "is registered with the leading coordinator")
    connected.add_metric([], 1.0 if stream.connected.is_set() else 0.0)
    sessions = CounterMetricFamily("landlord_agent_stream_sessions", "Sessions registered "
                                   "with a coordinator (each reconnect adds one)")
    sessions.add_metric([], float(stream.sessions))
    reports = CounterMetricFamily("landlord_agent_stream_reports", "Status reports sent")
    reports.add_metric([], float(stream.reports_sent))
    commands = CounterMetricFamily("landlord_agent_commands", "Coordinator commands run")
    commands.add_metric([], float(stream.commands_run))
    return [connected, sessions, reports, commands]


def _plane_families(plane: PlaneFigures, dropped: int | None) -> list[Metric]:
    lines = CounterMetricFamily("landlord_agent_request_log_lines", "HAProxy request log "
                                "lines the agent parsed into request windows")
    lines.add_metric([], float(plane.log_lines_received))
    restarts = CounterMetricFamily("landlord_agent_haproxy_restarts", "Times the agent "
                                   "restarted a HAProxy that had died")
    restarts.add_metric([], float(plane.restarts))
    out: list[Metric] = [lines, restarts, server_weights(plane.spec),
                         *request_families(plane.counts)]
    if dropped is not None:
        lost = CounterMetricFamily("landlord_agent_request_log_dropped_lines", "Request log "
                                   "lines HAProxy could not deliver to the agent (since "
                                   "HAProxy started)")
        lost.add_metric([], float(dropped))
        out.append(lost)
    return out


def request_families(counts: CountFigures) -> list[Metric]:
    """Requests and errors as HAProxy counted them (exact) and the log sampling (pure)."""
    labels = ["unit", "version"]
    requests = CounterMetricFamily("landlord_agent_requests", "Requests this host's HAProxy "
                                   "sent to each version's instances (its own per-server "
                                   "counters: exact, whatever the request log loses)",
                                   labels=labels)
    errors = CounterMetricFamily("landlord_agent_request_errors", "Of those, the failed: 5xx "
                                 "from the server, failed responses and connections that "
                                 "failed after every retry", labels=labels)
    for (unit, version), count in sorted(counts.totals.items()):
        requests.add_metric([unit, version], float(count.requests))
        errors.add_metric([unit, version], float(count.errors))
    sampled = CounterMetricFamily("landlord_agent_request_log_sampled_lines", "Request log "
                                  "lines the sampling picked (requests / sample ratio): what "
                                  "should reach the agent, received or dropped")
    sampled.add_metric([], float(counts.sampled_lines))
    every = GaugeMetricFamily("landlord_agent_request_log_sample_every", "HAProxy logs one "
                              "request in this many (latency is measured on those)")
    every.add_metric([], float(counts.sample_every))
    return [requests, errors, sampled, every]


def server_weights(spec: DataPlaneSpec) -> Metric:
    """The weight the agent gave each server of each unit on this host's HAProxy."""
    family = GaugeMetricFamily("landlord_agent_server_weight", "Weight this host's HAProxy "
                               "gives each server (instance) of a unit, as the agent last "
                               "set it (0: no new requests)",
                               labels=["unit", "version", "instance_id"])
    for name, unit in sorted(spec.units.items()):
        for server in sorted(unit.servers, key=lambda s: s.name):
            family.add_metric([name, server.version, server.name], float(server.weight))
    return family
