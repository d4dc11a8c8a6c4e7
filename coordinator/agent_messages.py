"""What agents tell the coordinator and what it tells them, as plain dataclasses.

The agent stream servicer converts these to and from protobuf (coordinator/convert.py);
nothing else in the coordinator sees the generated classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from common.gc_kinds import GcKind
from common.latency import LatencySketch
from common.resources import Resources
from common.stream_messages import ReportedEvent, RouteServer
from coordinator.records import InstanceRecord, VersionRecord

__all__ = [
    "AgentCommand",
    "AgentReport",
    "CommandResult",
    "DrainCommand",
    "GcCommand",
    "MetricsWindow",
    "ObservedInstance",
    "Outgoing",
    "Registration",
    "ReportedEvent",
    "RouteCommand",
    "RouteServer",
    "RunCheckCommand",
    "StartCommand",
    "StopCommand",
    "WeightsCommand",
]

ROUTABLE_STATES = frozenset({"running"})


@dataclass(frozen=True)
class ObservedInstance:
    """An instance as its agent last described it."""

    instance_id: str
    host_id: str
    apartment: str
    unit: str
    version: str
    slot: str
    state: str
    """A common.lifecycle.InstanceState value, or "" when the agent did not say."""
    health_score: float = 0.0
    address: str = ""
    port: int = 0
    restarts: int = 0
    reason: str = ""
    usage: Mapping[str, float] = field(default_factory=dict)
    started_at: float = 0.0
    last_activity: float = 0.0
    unenforced_limits: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.health_score >= 0.5

    @property
    def routable(self) -> bool:
        return self.state in ROUTABLE_STATES and self.healthy


@dataclass(frozen=True)
class Registration:
    host_id: str
    building: str
    address: str
    capacity: Resources
    labels: Mapping[str, str] = field(default_factory=dict)
    enforceable: tuple[str, ...] = ()
    agent_version: str = ""
    instances: tuple[ObservedInstance, ...] = ()
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsWindow:
    apartment: str
    unit: str
    version: str
    instance_id: str
    host_id: str
    start: float
    end: float
    requests: int
    errors: int
    latency: LatencySketch | None = None


@dataclass(frozen=True)
class CommandResult:
    command_id: str
    ok: bool
    """False: the command could not be carried out (a check: or did not finish)."""
    error: str = ""
    exit_code: int = 0
    """RunCheck: the command's exit code (meaningful when ``ok``)."""
    stdout: str = ""
    stderr: str = ""
    """RunCheck: the start of each stream (capped by the agent)."""
    output_truncated: bool = False
    timed_out: bool = False


@dataclass(frozen=True)
class AgentReport:
    """A batched delta: only what changed since the agent's previous report."""

    sequence: int
    time: float
    changed: tuple[ObservedInstance, ...] = ()
    removed_instance_ids: tuple[str, ...] = ()
    events: tuple[ReportedEvent, ...] = ()
    windows: tuple[MetricsWindow, ...] = ()
    host_usage: Mapping[str, float] = field(default_factory=dict)
    acked_command_ids: tuple[str, ...] = ()
    results: tuple[CommandResult, ...] = ()


@dataclass(frozen=True)
class StartCommand:
    instance: InstanceRecord
    version: VersionRecord
    state_from_instance_id: str = ""


@dataclass(frozen=True)
class StopCommand:
    instance_id: str
    grace_s: float = 30.0
    drain: bool = True


@dataclass(frozen=True)
class RouteCommand:
    """The whole desired data plane of one unit."""

    apartment: str
    unit: str
    service_port: int
    health_path: str
    servers: tuple[RouteServer, ...] = ()


@dataclass(frozen=True)
class WeightsCommand:
    apartment: str
    unit: str
    weights: Mapping[str, int]


@dataclass(frozen=True)
class DrainCommand:
    apartment: str
    unit: str
    instance_id: str
    timeout_s: float = 30.0


@dataclass(frozen=True)
class GcCommand:
    kinds: tuple[GcKind, ...] = ()
    """Empty: every kind."""


@dataclass(frozen=True)
class RunCheckCommand:
    """Run ``argv`` in the instance's container on its host; answered by a CommandResult."""

    instance_id: str
    argv: tuple[str, ...]
    timeout_s: float = 30.0


AgentCommand = (StartCommand | StopCommand | RouteCommand | WeightsCommand | DrainCommand
                | GcCommand | RunCheckCommand)


@dataclass(frozen=True)
class Outgoing:
    """A command with its id; the id makes a replay harmless."""

    command_id: str
    command: AgentCommand
