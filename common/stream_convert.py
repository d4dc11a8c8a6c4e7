"""Protobuf <-> the agent stream's dataclasses: one ``*_to_pb`` and one ``*_from_pb`` per
message, used by the agent and the coordinator alike (the edge at both ends).

Zero fields of a HealthCheck take ``common.unit_spec.HealthCheck``'s defaults; a command
this side does not know raises InvalidArgument (the agent answers it with a failed result).
"""

from __future__ import annotations

from collections.abc import Mapping

from common.errors import InvalidArgument
from common.gen.landlord.v1 import agent_pb2, types_pb2
from common.proto_values import (
    duration_from_pb,
    duration_to_pb,
    gc_kinds_from_pb,
    gc_kinds_to_pb,
    latency_from_pb,
    latency_to_pb,
    resources_from_pb,
    resources_to_pb,
    slot_from_pb,
    slot_to_pb,
    state_from_pb,
    state_mode_from_pb,
    state_mode_to_pb,
    state_to_pb,
    timestamp_from_pb,
    timestamp_to_pb,
)
from common.schema import peer_schema
from common.stream_commands import (
    AgentCommand,
    CancelOutput,
    CollectGarbage,
    Command,
    DrainInstance,
    ExecStream,
    PauseInstance,
    ReadLogs,
    ResumeInstance,
    RunCheck,
    SetRoute,
    SetWeights,
    StartInstance,
    StopInstance,
)
from common.stream_messages import (
    AgentReport,
    CommandResult,
    MetricsWindow,
    ObservedInstance,
    OutputChunk,
    Registration,
    ReportedEvent,
    RouteServer,
    UsageReading,
)
from common.unit_spec import DEFAULT_HEALTH, HealthCheck

__all__ = [
    "command_from_pb",
    "command_to_pb",
    "event_from_pb",
    "event_to_pb",
    "health_from_pb",
    "health_to_pb",
    "observed_from_pb",
    "observed_to_pb",
    "output_from_pb",
    "output_to_pb",
    "registration_from_pb",
    "registration_to_pb",
    "report_from_pb",
    "report_to_pb",
    "result_from_pb",
    "result_to_pb",
    "window_from_pb",
    "window_to_pb",
]

_USAGE = ("cpu_cores", "memory_bytes", "storage_bytes", "network_tx_bps", "pids")


# -- reports (agent -> coordinator) ----------------------------------------------------
def observed_to_pb(o: ObservedInstance) -> types_pb2.InstanceStatus:
    u = o.usage
    return types_pb2.InstanceStatus(
        instance_id=o.instance_id, host_id=o.host_id, apartment=o.apartment, unit=o.unit,
        version=o.version, slot=slot_to_pb(o.slot), state=state_to_pb(o.state),
        health_score=o.health_score, address=o.address, port=o.port,
        usage=types_pb2.ResourceUsage(
            cpu_cores=u.get("cpu_cores", 0.0), memory_bytes=int(u.get("memory_bytes", 0)),
            storage_bytes=int(u.get("storage_bytes", 0)),
            network_tx_bps=int(u.get("network_tx_bps", 0)), pids=int(u.get("pids", 0))),
        started_at=timestamp_to_pb(o.started_at), last_activity=timestamp_to_pb(o.last_activity),
        restarts=o.restarts, reason=o.reason, unenforced_limits=list(o.unenforced_limits),
    )


def observed_from_pb(pb: types_pb2.InstanceStatus, host_id: str) -> ObservedInstance:
    """``host_id`` is the reporting host's (used when the status does not name one)."""
    if not pb.instance_id:
        raise InvalidArgument("an instance status needs an instance_id", field="instance_id")
    return ObservedInstance(
        instance_id=pb.instance_id, host_id=pb.host_id or host_id, apartment=pb.apartment,
        unit=pb.unit, version=pb.version, slot=slot_from_pb(pb.slot),
        state=state_from_pb(pb.state) or "", health_score=pb.health_score,
        address=pb.address, port=pb.port, restarts=pb.restarts, reason=pb.reason,
        usage=_usage_from_pb(pb.usage), started_at=timestamp_from_pb(pb.started_at),
        last_activity=timestamp_from_pb(pb.last_activity),
        unenforced_limits=tuple(pb.unenforced_limits),
    )


def _usage_from_pb(pb: types_pb2.ResourceUsage) -> dict[str, float]:
    return {name: float(getattr(pb, name)) for name in _USAGE}


def usage_reading(pb: types_pb2.InstanceStatus, host_id: str,
                  known: ObservedInstance | None) -> UsageReading | None:
    """The status as a ``UsageReading`` when it says what ``known`` (the last observation
    of its instance, by the reporting host) says but for usage and activity; else None."""
    if known is None or known.host_id != host_id or (pb.host_id or host_id) != host_id or (
            known.state, known.health_score, known.restarts, known.reason, known.port,
            known.address, known.version, known.unit, known.apartment, known.slot,
            known.started_at, known.unenforced_limits) != (
            state_from_pb(pb.state) or "", pb.health_score, pb.restarts, pb.reason, pb.port,
            pb.address, pb.version, pb.unit, pb.apartment, slot_from_pb(pb.slot),
            timestamp_from_pb(pb.started_at), tuple(pb.unenforced_limits)):
        return None
    return UsageReading(known.instance_id, _usage_from_pb(pb.usage),
                        timestamp_from_pb(pb.last_activity))


def registration_to_pb(r: Registration) -> agent_pb2.Register:
    return agent_pb2.Register(
        host_id=r.host_id, building=r.building, address=r.address,
        capacity=resources_to_pb(r.capacity), labels=dict(r.labels),
        enforceable=list(r.enforceable), agent_version=r.agent_version,
        instances=[observed_to_pb(i) for i in r.instances], images=list(r.images),
        schema=r.schema)


def registration_from_pb(pb: agent_pb2.Register) -> Registration:
    return Registration(
        host_id=pb.host_id, building=pb.building, address=pb.address,
        capacity=resources_from_pb(pb.capacity, "capacity"), labels=dict(pb.labels),
        enforceable=tuple(pb.enforceable), agent_version=pb.agent_version,
        instances=tuple(observed_from_pb(i, pb.host_id) for i in pb.instances),
        images=tuple(pb.images), schema=peer_schema(pb.schema),
    )


def event_to_pb(e: ReportedEvent, host_id: str) -> types_pb2.Event:
    return types_pb2.Event(type=e.type, time=timestamp_to_pb(e.time), apartment=e.apartment,
                           unit=e.unit, version=e.version, host_id=host_id,
                           instance_id=e.instance_id, message=e.message,
                           details=dict(e.details))


def event_from_pb(pb: types_pb2.Event) -> ReportedEvent:
    return ReportedEvent(type=pb.type, time=timestamp_from_pb(pb.time), message=pb.message,
                         apartment=pb.apartment, unit=pb.unit, version=pb.version,
                         instance_id=pb.instance_id, details=dict(pb.details))


def window_to_pb(w: MetricsWindow) -> types_pb2.MetricsWindow:
    pb = types_pb2.MetricsWindow(
        apartment=w.apartment, unit=w.unit, version=w.version, instance_id=w.instance_id,
        host_id=w.host_id, start=timestamp_to_pb(w.start), end=timestamp_to_pb(w.end),
        requests=w.requests, errors=w.errors, latency_sample_every=w.sample_every)
    if w.latency is not None and w.latency.count:
        pb.latency.CopyFrom(latency_to_pb(w.latency))
    return pb


def window_from_pb(pb: types_pb2.MetricsWindow, host_id: str) -> MetricsWindow:
    """``host_id``: the stream's (authenticated) host, the entry host the window's requests
    came through; a host id the message claims is ignored."""
    return MetricsWindow(
        apartment=pb.apartment, unit=pb.unit, version=pb.version, instance_id=pb.instance_id,
        host_id=host_id, start=timestamp_from_pb(pb.start),
        end=timestamp_from_pb(pb.end), requests=pb.requests, errors=pb.errors,
        latency=latency_from_pb(pb.latency), sample_every=max(1, pb.latency_sample_every))


def result_to_pb(r: CommandResult) -> agent_pb2.CommandResult:
    return agent_pb2.CommandResult(
        command_id=r.command_id, ok=r.ok, error=r.error, exit_code=r.exit_code,
        stdout=r.stdout, stderr=r.stderr, output_truncated=r.output_truncated,
        timed_out=r.timed_out)


def result_from_pb(pb: agent_pb2.CommandResult) -> CommandResult:
    return CommandResult(pb.command_id, pb.ok, pb.error, pb.exit_code, pb.stdout, pb.stderr,
                         pb.output_truncated, pb.timed_out)


def report_to_pb(r: AgentReport, host_id: str) -> agent_pb2.StatusReport:
    return agent_pb2.StatusReport(
        sequence=r.sequence, time=timestamp_to_pb(r.time),
        changed=[observed_to_pb(i) for i in r.changed],
        removed_instance_ids=list(r.removed_instance_ids),
        events=[event_to_pb(e, host_id) for e in r.events],
        windows=[window_to_pb(w) for w in r.windows],
        host_usage=types_pb2.ResourceUsage(
            cpu_cores=r.host_usage.get("cpu_cores", 0.0),
            memory_bytes=int(r.host_usage.get("memory_bytes", 0))),
        acked_command_ids=list(r.acked_command_ids),
        results=[result_to_pb(x) for x in r.results],
        output=[output_to_pb(c) for c in r.output],
        wake_units=[f"{a}/{u}" for a, u in r.wake_units],
    )


def report_from_pb(pb: agent_pb2.StatusReport, host_id: str,
                   known: Mapping[str, ObservedInstance] | None = None) -> AgentReport:
    """``known``: the receiver's last observations by instance id; a status differing from
    its instance's only in usage and activity goes to ``usage``, any other to ``changed``."""
    changed: list[ObservedInstance] = []
    usage: list[UsageReading] = []
    if known and len({s.instance_id for s in pb.changed}) < len(pb.changed):
        known = None  # an instance twice in one report: in order, in full (the last wins)
    for status in pb.changed:
        if known and (reading := usage_reading(status, host_id, known.get(status.instance_id))):
            usage.append(reading)
        else:
            changed.append(observed_from_pb(status, host_id))
    return AgentReport(
        sequence=pb.sequence, time=timestamp_from_pb(pb.time),
        changed=tuple(changed), usage=tuple(usage),
        removed_instance_ids=tuple(pb.removed_instance_ids),
        events=tuple(event_from_pb(e) for e in pb.events),
        windows=tuple(window_from_pb(w, host_id) for w in pb.windows),
        host_usage={"cpu_cores": pb.host_usage.cpu_cores,
                    "memory_bytes": float(pb.host_usage.memory_bytes)},
        acked_command_ids=tuple(pb.acked_command_ids),
        results=tuple(result_from_pb(x) for x in pb.results),
        output=tuple(output_from_pb(c) for c in pb.output),
        wake_units=tuple(_unit_key(k) for k in pb.wake_units if "/" in k),
    )


def _unit_key(text: str) -> tuple[str, str]:
    apartment, _, unit = text.partition("/")
    return apartment, unit


def output_to_pb(c: OutputChunk) -> agent_pb2.OutputChunk:
    return agent_pb2.OutputChunk(command_id=c.command_id, data=c.data, stderr=c.stderr,
                                 end=c.end, exit_code=c.exit_code, error=c.error)


def output_from_pb(pb: agent_pb2.OutputChunk) -> OutputChunk:
    return OutputChunk(pb.command_id, pb.data, pb.stderr, pb.end, pb.exit_code, pb.error)


# -- commands (coordinator -> agent) ---------------------------------------------------
def health_to_pb(h: HealthCheck, healthy_threshold: int = 1,
                 warmup_s: float = 0.0) -> types_pb2.HealthCheck:
    return types_pb2.HealthCheck(
        path=h.path, command=list(h.command), interval=duration_to_pb(h.interval_s),
        timeout=duration_to_pb(h.timeout_s), healthy_threshold=healthy_threshold,
        unhealthy_threshold=h.retries, warmup=duration_to_pb(warmup_s))


def health_from_pb(pb: types_pb2.HealthCheck) -> HealthCheck:
    """The check of a message; zero fields take HealthCheck's defaults (thresholds and
    warm-up are the caller's: they belong to the deployment, not the check)."""
    return HealthCheck(
        path=pb.path or DEFAULT_HEALTH.path, command=tuple(pb.command),
        interval_s=duration_from_pb(pb.interval) or DEFAULT_HEALTH.interval_s,
        timeout_s=duration_from_pb(pb.timeout) or DEFAULT_HEALTH.timeout_s,
        retries=pb.unhealthy_threshold or DEFAULT_HEALTH.retries)


def _start_to_pb(s: StartInstance) -> agent_pb2.StartInstance:
    spec = types_pb2.UnitSpec(
        apartment=s.apartment, unit=s.unit, image=s.image, command=list(s.command),
        env=dict(s.env), secret_env=dict(s.secret_env), service_port=s.service_port,
        health=health_to_pb(s.health, s.healthy_threshold, s.warmup_s),
        resources=resources_to_pb(s.resources), state_mode=state_mode_to_pb(s.state_mode),
        idle_timeout=duration_to_pb(s.idle_timeout_s), run_as_root=s.run_as_root,
        network_mode=s.network_mode)
    return agent_pb2.StartInstance(
        instance_id=s.instance_id, spec=spec, version=s.version, slot=slot_to_pb(s.slot),
        port=s.port, state_from_instance_id=s.state_from_instance_id)


def _start_from_pb(pb: agent_pb2.StartInstance) -> StartInstance:
    spec = pb.spec
    return StartInstance(
        instance_id=pb.instance_id, apartment=spec.apartment, unit=spec.unit,
        version=pb.version, slot=slot_from_pb(pb.slot) or "blue", image=spec.image,
        port=pb.port, command=tuple(spec.command), env=dict(spec.env),
        secret_env=dict(spec.secret_env),
        health=health_from_pb(spec.health),
        healthy_threshold=max(1, spec.health.healthy_threshold),
        warmup_s=max(0.0, duration_from_pb(spec.health.warmup)),
        resources=resources_from_pb(spec.resources), service_port=spec.service_port,
        state_mode=state_mode_from_pb(spec.state_mode),
        idle_timeout_s=max(0.0, duration_from_pb(spec.idle_timeout)),
        state_from_instance_id=pb.state_from_instance_id, run_as_root=spec.run_as_root,
        network_mode=spec.network_mode)


def command_to_pb(c: Command) -> agent_pb2.Command:
    cmd, pb = c.command, agent_pb2.Command(command_id=c.command_id)
    if isinstance(cmd, StartInstance):
        pb.start.CopyFrom(_start_to_pb(cmd))
    elif isinstance(cmd, StopInstance):
        pb.stop.CopyFrom(agent_pb2.StopInstance(
            instance_id=cmd.instance_id, grace=duration_to_pb(cmd.grace_s), drain=cmd.drain,
            collect=cmd.collect))
    elif isinstance(cmd, SetRoute):
        pb.route.CopyFrom(agent_pb2.SetUnitRoute(
            apartment=cmd.apartment, unit=cmd.unit, service_port=cmd.service_port,
            health_path=cmd.health_path, servers=[
                agent_pb2.DataPlaneServer(server=s.server, version=s.version,
                                          address=s.address, port=s.port, weight=s.weight,
                                          state=s.state)
                for s in cmd.servers], protected_versions=list(cmd.protected_versions),
            sticky=cmd.sticky, retry_after_s=cmd.retry_after_s,
            wake_on_request=cmd.wake_on_request))
    elif isinstance(cmd, SetWeights):
        pb.weights.CopyFrom(agent_pb2.SetWeights(apartment=cmd.apartment, unit=cmd.unit,
                                                 weights=dict(cmd.weights)))
    elif isinstance(cmd, DrainInstance):
        pb.drain.CopyFrom(agent_pb2.DrainInstance(
            apartment=cmd.apartment, unit=cmd.unit, instance_id=cmd.instance_id,
            timeout=duration_to_pb(cmd.timeout_s)))
    elif isinstance(cmd, CollectGarbage):
        pb.gc.CopyFrom(agent_pb2.CollectGarbage(gc_kinds=gc_kinds_to_pb(cmd.kinds)))
    elif isinstance(cmd, RunCheck):
        pb.run_check.CopyFrom(agent_pb2.RunCheck(
            instance_id=cmd.instance_id, argv=list(cmd.argv),
            timeout=duration_to_pb(cmd.timeout_s)))
    elif isinstance(cmd, ReadLogs):
        pb.read_logs.CopyFrom(agent_pb2.ReadLogs(
            instance_id=cmd.instance_id, follow=cmd.follow, tail=cmd.tail,
            since=timestamp_to_pb(cmd.since) if cmd.since else None))
    elif isinstance(cmd, ExecStream):
        pb.exec_stream.CopyFrom(agent_pb2.ExecStream(
            instance_id=cmd.instance_id, argv=list(cmd.argv),
            timeout=duration_to_pb(cmd.timeout_s)))
    elif isinstance(cmd, PauseInstance):
        pb.pause.CopyFrom(agent_pb2.PauseInstance(instance_id=cmd.instance_id,
                                                  settle=duration_to_pb(cmd.settle_s)))
    elif isinstance(cmd, ResumeInstance):
        pb.resume.CopyFrom(agent_pb2.ResumeInstance(instance_id=cmd.instance_id))
    else:
        pb.cancel_output.CopyFrom(agent_pb2.CancelOutput(command_id=cmd.command_id))
    return pb


def command_from_pb(pb: agent_pb2.Command) -> Command:
    """The command of a message; InvalidArgument for one this side does not know."""
    kind = pb.WhichOneof("action")
    cmd: AgentCommand
    if kind == "start":
        cmd = _start_from_pb(pb.start)
    elif kind == "stop":
        cmd = StopInstance(pb.stop.instance_id, duration_from_pb(pb.stop.grace), pb.stop.drain,
                           pb.stop.collect)
    elif kind == "route":
        r = pb.route
        cmd = SetRoute(r.apartment, r.unit, r.service_port,
                       r.health_path or DEFAULT_HEALTH.path, tuple(
                           RouteServer(s.server, s.version, s.address, s.port, s.weight, s.state)
                           for s in r.servers), tuple(r.protected_versions), r.sticky,
                       max(0, r.retry_after_s), r.wake_on_request)
    elif kind == "weights":
        cmd = SetWeights(pb.weights.apartment, pb.weights.unit, dict(pb.weights.weights))
    elif kind == "drain":
        d = pb.drain
        cmd = DrainInstance(d.apartment, d.unit, d.instance_id, duration_from_pb(d.timeout))
    elif kind == "gc":
        cmd = CollectGarbage(gc_kinds_from_pb(pb.gc.gc_kinds))
    elif kind == "run_check":
        c = pb.run_check
        cmd = RunCheck(c.instance_id, tuple(c.argv), duration_from_pb(c.timeout))
    elif kind == "read_logs":
        logs = pb.read_logs
        since = timestamp_from_pb(logs.since) if logs.HasField("since") else 0.0
        cmd = ReadLogs(logs.instance_id, logs.follow, since, max(0, logs.tail))
    elif kind == "exec_stream":
        e = pb.exec_stream
        cmd = ExecStream(e.instance_id, tuple(e.argv), duration_from_pb(e.timeout))
    elif kind == "cancel_output":
        cmd = CancelOutput(pb.cancel_output.command_id)
    elif kind == "pause":
        cmd = PauseInstance(pb.pause.instance_id, max(0.0, duration_from_pb(pb.pause.settle)))
    elif kind == "resume":
        cmd = ResumeInstance(pb.resume.instance_id)
    else:
        raise InvalidArgument(f"unknown command {kind!r}", field="action")
    return Command(pb.command_id, cmd)
