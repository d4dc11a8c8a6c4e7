"""Protobuf <-> coordinator dataclasses for the agent stream (the edge; nothing else imports pb)."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from common.errors import InvalidArgument, LandlordError
from common.gen.landlord.v1 import agent_pb2, types_pb2
from common.latency import LatencySketch
from common.resources import Resources
from common.unit_spec import StateMode, UnitSpec
from coordinator.agent_messages import (
    AgentCommand,
    AgentReport,
    CommandResult,
    DrainCommand,
    GcCommand,
    MetricsWindow,
    ObservedInstance,
    Outgoing,
    Registration,
    ReportedEvent,
    RouteCommand,
    RunCheckCommand,
    StartCommand,
    StopCommand,
    WeightsCommand,
)

__all__ = [
    "command_to_pb",
    "from_seconds",
    "latency_from_pb",
    "latency_to_pb",
    "observed_from_pb",
    "observed_to_pb",
    "registration_from_pb",
    "report_from_pb",
    "resources_from_pb",
    "resources_to_pb",
    "seconds",
    "timestamp",
    "to_seconds",
    "unit_spec_to_pb",
]

STATE_NAMES = {
    types_pb2.INSTANCE_STATE_CREATED: "created",
    types_pb2.INSTANCE_STATE_INITIALIZING: "initializing",
    types_pb2.INSTANCE_STATE_READY: "ready",
    types_pb2.INSTANCE_STATE_RUNNING: "running",
    types_pb2.INSTANCE_STATE_PAUSED: "paused",
    types_pb2.INSTANCE_STATE_STOPPING: "stopping",
    types_pb2.INSTANCE_STATE_STOPPED: "stopped",
    types_pb2.INSTANCE_STATE_ERROR: "error",
}
STATE_VALUES = {name: value for value, name in STATE_NAMES.items()}
SLOT_NAMES = {types_pb2.SLOT_BLUE: "blue", types_pb2.SLOT_GREEN: "green"}
SLOT_VALUES = {name: value for value, name in SLOT_NAMES.items()}
STATE_MODES = {types_pb2.STATE_MODE_UNSPECIFIED: StateMode.NONE,
               types_pb2.STATE_MODE_SHARED: StateMode.SHARED,
               types_pb2.STATE_MODE_SNAPSHOT: StateMode.SNAPSHOT}
STATE_MODE_VALUES = {name: value for value, name in STATE_MODES.items()}


def timestamp(epoch: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if epoch:
        ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def from_seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


def to_seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def resources_from_pb(pb: types_pb2.Resources, what: str = "resources") -> Resources:
    values = (pb.cpu_millis, pb.memory_bytes, pb.storage_bytes, pb.network_bps)
    if any(v < 0 for v in values):
        raise InvalidArgument(f"{what} must not be negative", field=what)
    return Resources(cpu=pb.cpu_millis / 1000.0, memory=pb.memory_bytes,
                     storage=pb.storage_bytes, network=pb.network_bps)


def resources_to_pb(r: Resources) -> types_pb2.Resources:
    return types_pb2.Resources(cpu_millis=round(r.cpu * 1000), memory_bytes=r.memory,
                               storage_bytes=r.storage, network_bps=r.network)


def observed_from_pb(pb: types_pb2.InstanceStatus, host_id: str) -> ObservedInstance:
    if not pb.instance_id:
        raise InvalidArgument("an instance status needs an instance_id", field="instance_id")
    usage = {
        "cpu_cores": pb.usage.cpu_cores, "memory_bytes": float(pb.usage.memory_bytes),
        "storage_bytes": float(pb.usage.storage_bytes),
        "network_tx_bps": float(pb.usage.network_tx_bps), "pids": float(pb.usage.pids),
    }
    return ObservedInstance(
        instance_id=pb.instance_id, host_id=pb.host_id or host_id, apartment=pb.apartment,
        unit=pb.unit, version=pb.version, slot=SLOT_NAMES.get(pb.slot, ""),
        state=STATE_NAMES.get(pb.state, ""), health_score=pb.health_score,
        address=pb.address, port=pb.port, restarts=pb.restarts, reason=pb.reason,
        usage=usage, started_at=seconds(pb.started_at),
        last_activity=seconds(pb.last_activity),
        unenforced_limits=tuple(pb.unenforced_limits),
    )


def observed_to_pb(o: ObservedInstance) -> types_pb2.InstanceStatus:
    u = o.usage
    return types_pb2.InstanceStatus(
        instance_id=o.instance_id, host_id=o.host_id, apartment=o.apartment, unit=o.unit,
        version=o.version, slot=SLOT_VALUES.get(o.slot, types_pb2.SLOT_UNSPECIFIED),
        state=STATE_VALUES.get(o.state, types_pb2.INSTANCE_STATE_UNSPECIFIED),
        health_score=o.health_score, address=o.address, port=o.port,
        usage=types_pb2.ResourceUsage(
            cpu_cores=u.get("cpu_cores", 0.0), memory_bytes=int(u.get("memory_bytes", 0)),
            storage_bytes=int(u.get("storage_bytes", 0)),
            network_tx_bps=int(u.get("network_tx_bps", 0)), pids=int(u.get("pids", 0)),
        ),
        started_at=timestamp(o.started_at), last_activity=timestamp(o.last_activity),
        restarts=o.restarts, reason=o.reason, unenforced_limits=list(o.unenforced_limits),
    )


def registration_from_pb(pb: agent_pb2.Register) -> Registration:
    return Registration(
        host_id=pb.host_id, building=pb.building, address=pb.address,
        capacity=resources_from_pb(pb.capacity, "capacity"), labels=dict(pb.labels),
        enforceable=tuple(pb.enforceable), agent_version=pb.agent_version,
        instances=tuple(observed_from_pb(i, pb.host_id) for i in pb.instances),
        images=tuple(pb.images),
    )


def latency_from_pb(pb: types_pb2.LatencySummary) -> LatencySketch | None:
    if not pb.count:
        return None
    keys = sorted(pb.positive_buckets)
    deltas = [k - prev for prev, k in zip([0, *keys], keys, strict=False)]
    try:
        return LatencySketch.from_dict({
            "a": pb.relative_accuracy or 0.01, "k": deltas,
            "c": [pb.positive_buckets[k] for k in keys], "z": pb.zero_count,
            "s": pb.sum_ms, "lo": pb.min_ms, "hi": pb.max_ms,
        })
    except LandlordError:
        return None


def latency_to_pb(sketch: LatencySketch) -> types_pb2.LatencySummary:
    data = sketch.to_dict()
    key, buckets = 0, {}
    for delta, count in zip(data["k"], data["c"], strict=True):  # type: ignore[call-overload]
        key += delta
        buckets[key] = count
    return types_pb2.LatencySummary(
        relative_accuracy=sketch.relative_accuracy, positive_buckets=buckets,
        zero_count=int(data["z"]),  # type: ignore[call-overload]
        count=sketch.count, sum_ms=sketch.sum, min_ms=sketch.min or 0.0,
        max_ms=sketch.max or 0.0,
    )


def report_from_pb(pb: agent_pb2.StatusReport, host_id: str) -> AgentReport:
    return AgentReport(
        sequence=pb.sequence, time=seconds(pb.time),
        changed=tuple(observed_from_pb(i, host_id) for i in pb.changed),
        removed_instance_ids=tuple(pb.removed_instance_ids),
        events=tuple(
            ReportedEvent(type=e.type, time=seconds(e.time), message=e.message,
                       apartment=e.apartment, unit=e.unit, version=e.version,
                       instance_id=e.instance_id, details=dict(e.details))
            for e in pb.events
        ),
        windows=tuple(
            MetricsWindow(apartment=w.apartment, unit=w.unit, version=w.version,
                          instance_id=w.instance_id, host_id=w.host_id or host_id,
                          start=seconds(w.start), end=seconds(w.end), requests=w.requests,
                          errors=w.errors, latency=latency_from_pb(w.latency))
            for w in pb.windows
        ),
        host_usage={"cpu_cores": pb.host_usage.cpu_cores,
                    "memory_bytes": float(pb.host_usage.memory_bytes)},
        acked_command_ids=tuple(pb.acked_command_ids),
        results=tuple(CommandResult(r.command_id, r.ok, r.error, r.exit_code, r.stdout,
                                    r.stderr, r.output_truncated, r.timed_out)
                      for r in pb.results),
    )


def unit_spec_to_pb(spec: UnitSpec) -> types_pb2.UnitSpec:
    """Everything a version runs, as published and as sent to agents."""
    hc = spec.health_check
    return types_pb2.UnitSpec(
        apartment=spec.apartment, unit=spec.unit, image=spec.image, command=list(spec.command),
        env=dict(spec.env), port=spec.port, service_port=spec.service_port,
        health=types_pb2.HealthCheck(
            path=hc.path, command=list(hc.command), interval=from_seconds(hc.interval_s),
            timeout=from_seconds(hc.timeout_s), healthy_threshold=spec.healthy_threshold,
            unhealthy_threshold=hc.retries, warmup=from_seconds(spec.warmup_s),
        ),
        resources=resources_to_pb(spec.resources), dependencies=list(spec.dependencies),
        state_mode=STATE_MODE_VALUES[spec.state_mode],
        idle_timeout=from_seconds(spec.idle_timeout_s),
    )


def _start_to_pb(cmd: StartCommand) -> agent_pb2.StartInstance:
    record = cmd.instance
    return agent_pb2.StartInstance(
        instance_id=record.instance_id, spec=unit_spec_to_pb(cmd.version.tag.spec),
        version=record.version,
        slot=SLOT_VALUES.get(record.slot, types_pb2.SLOT_UNSPECIFIED), port=record.port,
        state_from_instance_id=cmd.state_from_instance_id,
    )


def _route_to_pb(cmd: RouteCommand) -> agent_pb2.SetUnitRoute:
    return agent_pb2.SetUnitRoute(
        apartment=cmd.apartment, unit=cmd.unit, service_port=cmd.service_port,
        health_path=cmd.health_path,
        servers=[
            agent_pb2.DataPlaneServer(server=s.server, version=s.version, address=s.address,
                                      port=s.port, weight=s.weight, state=s.state)
            for s in cmd.servers
        ],
    )


def command_to_pb(out: Outgoing) -> agent_pb2.CoordinatorMessage:
    cmd: AgentCommand = out.command
    pb = agent_pb2.Command(command_id=out.command_id)
    if isinstance(cmd, StartCommand):
        pb.start.CopyFrom(_start_to_pb(cmd))
    elif isinstance(cmd, StopCommand):
        pb.stop.CopyFrom(agent_pb2.StopInstance(instance_id=cmd.instance_id,
                                                grace=from_seconds(cmd.grace_s), drain=cmd.drain))
    elif isinstance(cmd, RouteCommand):
        pb.route.CopyFrom(_route_to_pb(cmd))
    elif isinstance(cmd, WeightsCommand):
        pb.weights.CopyFrom(agent_pb2.SetWeights(apartment=cmd.apartment, unit=cmd.unit,
                                                 weights=dict(cmd.weights)))
    elif isinstance(cmd, DrainCommand):
        pb.drain.CopyFrom(agent_pb2.DrainInstance(apartment=cmd.apartment, unit=cmd.unit,
                                                  instance_id=cmd.instance_id,
                                                  timeout=from_seconds(cmd.timeout_s)))
    elif isinstance(cmd, GcCommand):
        pb.gc.CopyFrom(agent_pb2.CollectGarbage(kinds=list(cmd.kinds)))
    elif isinstance(cmd, RunCheckCommand):
        pb.run_check.CopyFrom(agent_pb2.RunCheck(instance_id=cmd.instance_id,
                                                 argv=list(cmd.argv),
                                                 timeout=from_seconds(cmd.timeout_s)))
    return agent_pb2.CoordinatorMessage(command=pb)
