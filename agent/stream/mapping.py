"""Pure translations between the coordinator stream's values and the agent's own (no I/O).

The stream speaks ``common.stream_commands`` / ``common.stream_messages`` (StartInstance,
SetRoute, ObservedInstance, MetricsWindow, ...); the agent speaks ``agent.instances.spec``, its
``AgentEvent`` and the data plane's ``UnitSpec``/``WindowSnapshot``. Everything here is a
function of its arguments, so ``agent.stream.adapter`` only decides *when* to call them and
does the I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from agent.dataplane import ServerSpec, ServerState, UnitSpec, WindowSnapshot
from agent.instances.events import AgentEvent, EventType
from agent.instances.spec import (
    HealthSpec,
    InstanceSpec,
    InstanceView,
    ResourceSpec,
    Slot,
    StateMode,
)
from agent.runtime.protocol import ExecResult
from common.errors import InvalidArgument
from common.network_modes import parse_network_mode
from common.stream_commands import ExecStream, RunCheck, StartInstance
from common.stream_messages import (
    CommandResult,
    MetricsWindow,
    ObservedInstance,
    ReportedEvent,
    RouteServer,
)

__all__ = [
    "CHECK_TIMEOUT_DEFAULT",
    "CHECK_TIMEOUT_MAX",
    "QUIET_EVENTS",
    "RouteChanges",
    "check_output",
    "check_timeout",
    "instance_report",
    "instance_spec",
    "plane_unit",
    "reported_event",
    "route_changes",
    "traffic_version",
    "unenforced_limits",
    "window_report",
]

QUIET_EVENTS = frozenset({EventType.STATE, EventType.HEALTH})
"""Events not forwarded to the coordinator: the instance status they change is."""
CHECK_TIMEOUT_DEFAULT = 30.0
"""Seconds a RunCheck may take when the command does not say."""
CHECK_TIMEOUT_MAX = 300.0
_PLANE_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def plane_unit(apartment: str, unit: str) -> str:
    """The data plane's name for a unit: ``apartment.unit``, or a shortened name with a
    digest of both when that is longer than HAProxy names allow here (63)."""
    name = f"{apartment}.{unit}"
    if _PLANE_UNIT.fullmatch(name):
        return name
    digest = hashlib.sha256(f"{apartment}/{unit}".encode()).hexdigest()[:10]
    return f"{unit[:40]}.{digest}"


def instance_spec(cmd: StartInstance) -> InstanceSpec:
    """What the supervisor runs for a StartInstance; zero fields take the agent defaults.

    Raises ``InvalidArgument`` (from the spec's own checks) for a command it cannot run.
    """
    r = cmd.resources
    resource_default = ResourceSpec()
    health = HealthSpec.of(cmd.health, max(1, cmd.healthy_threshold), max(0.0, cmd.warmup_s))
    resources = ResourceSpec(
        cpu=r.cpu if r.cpu > 0 else resource_default.cpu,
        memory=r.memory if r.memory > 0 else resource_default.memory,
        storage=r.storage,
        network=r.network,
    )
    try:
        slot, state_mode = Slot(cmd.slot), StateMode(cmd.state_mode)
    except ValueError as exc:
        raise InvalidArgument(f"instance {cmd.instance_id}: {exc}",
                              instance=cmd.instance_id) from None
    return InstanceSpec(
        apartment=cmd.apartment, unit=cmd.unit, version=cmd.version, slot=slot,
        instance_id=cmd.instance_id, image=cmd.image, port=cmd.port,
        command=tuple(cmd.command), env=dict(cmd.env), secret_env=dict(cmd.secret_env),
        health=health, resources=resources,
        state_mode=state_mode, idle_timeout=max(0.0, cmd.idle_timeout_s),
        network_mode=parse_network_mode(cmd.network_mode),
        run_as_root=cmd.run_as_root,
    )


def check_timeout(cmd: RunCheck | ExecStream) -> float:
    """The seconds a RunCheck or an ExecStream may run: its own timeout (0 = the default),
    at most the cap.

    Raises ``InvalidArgument`` for a command without argv."""
    if not cmd.argv or not cmd.argv[0]:
        raise InvalidArgument(f"run check in {cmd.instance_id}: no command given",
                              instance=cmd.instance_id)
    wanted = cmd.timeout_s if cmd.timeout_s > 0 else CHECK_TIMEOUT_DEFAULT
    return min(wanted, CHECK_TIMEOUT_MAX)


def check_output(result: ExecResult, timeout: float) -> CommandResult:
    """What the coordinator is told of a command run in a container (the command id is
    the stream's to fill in): a command that exited (whatever its code) completed; one
    killed at its deadline did not."""
    error = ""
    if result.timed_out or result.exit_code is None:
        error = f"timed out after {timeout:g}s (killed)" if result.timed_out else (
            "the command's exit code is unknown")
    return CommandResult(
        command_id="", ok=not error, error=error,
        exit_code=result.exit_code if result.exit_code is not None else -1,
        stdout=result.stdout.decode("utf-8", "replace"),
        stderr=result.stderr.decode("utf-8", "replace"),
        output_truncated=result.truncated, timed_out=result.timed_out,
    )


def unenforced_limits(enforcement: Mapping[str, str]) -> tuple[str, ...]:
    """Resources whose limit this host was asked for but does not enforce."""
    return tuple(sorted(k for k, how in enforcement.items() if how.startswith("not enforced")))


def instance_report(view: InstanceView, host_id: str, reason: str = "",
                    usage: Mapping[str, float] | None = None) -> ObservedInstance:
    return ObservedInstance(
        instance_id=view.instance_id, host_id=host_id, apartment=view.apartment,
        unit=view.unit,
        version=view.version, slot=view.slot, state=view.state,
        health_score=view.health_score, address=view.address, port=view.port,
        restarts=view.restarts,
        reason=view.metadata.get("escalated") or view.metadata.get("evicted")
        or view.metadata.get("collected") or reason,
        usage=dict(usage or {}), started_at=view.started_at, last_activity=view.last_activity,
        unenforced_limits=unenforced_limits(view.enforcement),
    )


def reported_event(event: AgentEvent, apartment: str) -> ReportedEvent | None:
    """An agent event as the stream sends it; None for the ones the instance status
    already carries."""
    if not event.type or event.type in QUIET_EVENTS:
        return None
    details = {str(k): _text(v) for k, v in event.details.items()}
    message = details.get("reason") or details.get("path") or ""
    return ReportedEvent(
        type=event.type, time=event.time, message=message, apartment=apartment,
        unit=event.unit, version=event.version, instance_id=event.instance, details=details,
    )


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class RouteChanges:
    """What turns a unit's servers on this data plane into the coordinator's list, in the
    order it is applied: servers added or changed (a new one with weight 0), then every
    weight in one batch (so traffic moves at once), then the servers no longer listed."""

    upserts: tuple[ServerSpec, ...]
    weights: Mapping[str, int]
    removals: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.upserts or self.weights or self.removals)


def route_changes(current: UnitSpec | None, servers: Sequence[RouteServer]) -> RouteChanges:
    have = {s.name: s for s in (current.servers if current is not None else ())}
    upserts, weights = [], {}
    for s in servers:
        wanted = ServerSpec(s.server, s.address, s.port, s.version, s.weight,
                            ServerState(s.state or "ready"))
        old = have.get(s.server)
        first = replace(wanted, weight=old.weight if old is not None else 0)
        if old != first:
            upserts.append(first)
        if first.weight != wanted.weight:
            weights[s.server] = wanted.weight
    listed = {s.server for s in servers}
    removals = tuple(sorted(name for name in have if name not in listed))
    return RouteChanges(tuple(upserts), weights, removals)


def traffic_version(servers: Iterable[RouteServer]) -> str | None:
    """The version getting the most weight (the one GC must never collect as idle);
    None when no server has weight."""
    totals: dict[str, int] = {}
    for s in servers:
        if s.weight > 0 and s.state in ("", "ready"):
            totals[s.version] = totals.get(s.version, 0) + s.weight
    if not totals:
        return None
    return max(sorted(totals), key=lambda v: totals[v])


def window_report(host_id: str, apartment: str, unit: str,
                  window: WindowSnapshot) -> MetricsWindow:
    """What the stream reports of one completed request window of the data plane."""
    return MetricsWindow(
        apartment=apartment, unit=unit, version=window.version, instance_id=window.instance,
        host_id=host_id, start=window.start, end=window.end, requests=window.requests,
        errors=window.errors, latency=window.latency if window.latency.count else None,
        sample_every=window.sample_every,
    )
