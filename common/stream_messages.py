"""What agents tell the coordinator on the agent stream, as plain dataclasses both ends use.

The protobuf is converted to and from these at each end (``common.stream_convert``);
the commands going the other way are in ``common.stream_commands``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from common.latency import LatencySketch
from common.lifecycle import InstanceState
from common.resources import Resources
from common.schema import STREAM_SCHEMA

__all__ = [
    "ROUTABLE_STATES",
    "AgentReport",
    "CommandResult",
    "MetricsWindow",
    "ObservedInstance",
    "OutputChunk",
    "Registration",
    "ReportedEvent",
    "RouteServer",
    "UsageReading",
]

ROUTABLE_STATES = frozenset({InstanceState.RUNNING})


@dataclass(frozen=True)
class ReportedEvent:
    """Something that happened on a host (limit_exceeded, recovery.*, gc.*, ...)."""

    type: str
    """A ``common.event_types.EventType`` value."""
    time: float
    message: str = ""
    apartment: str = ""
    unit: str = ""
    version: str = ""
    instance_id: str = ""
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteServer:
    """One server of a unit's data plane route."""

    server: str
    version: str
    address: str
    port: int
    weight: int
    state: str
    """ready, drain or maint."""


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
    """A ``common.lifecycle.InstanceState`` value, or "" when the agent did not say."""
    health_score: float = 0.0
    address: str = ""
    port: int = 0
    restarts: int = 0
    reason: str = ""
    usage: Mapping[str, float] = field(default_factory=dict)
    """cpu_cores, memory_bytes, storage_bytes, network_tx_bps, pids (those measured)."""
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
    """Who a host is and everything it runs: the first message of every session."""

    host_id: str
    building: str
    address: str
    capacity: Resources
    labels: Mapping[str, str] = field(default_factory=dict)
    enforceable: tuple[str, ...] = ()
    """The limits this host enforces: cpu, memory, storage, network."""
    agent_version: str = ""
    instances: tuple[ObservedInstance, ...] = ()
    images: tuple[str, ...] = ()
    """Images present on the host ("repo:tag")."""
    schema: int = STREAM_SCHEMA
    """The agent stream schema the agent speaks (``common.schema``; 1 for release 0.1.0)."""


@dataclass(frozen=True)
class MetricsWindow:
    """Requests of one (unit, version, instance) over [start, end), each counted once."""

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
    sample_every: int = 1
    """``latency`` holds one request in this many (requests and errors are exact)."""


@dataclass(frozen=True)
class CommandResult:
    """How one command went; RunCheck adds what the command it ran did."""

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
class OutputChunk:
    """A piece of a ReadLogs or ExecStream command's output, in order per command id."""

    command_id: str
    data: bytes = b""
    stderr: bool = False
    end: bool = False
    """The last chunk of the command."""
    exit_code: int = -1
    """With ``end``, ExecStream: the command's exit code (-1: none)."""
    error: str = ""
    """With ``end``: why the output stopped early."""


class UsageReading(NamedTuple):
    """What changed in a status that changed in nothing but its usage and activity."""

    instance_id: str
    usage: Mapping[str, float]
    last_activity: float


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
    """cpu_cores and memory_bytes of the whole host."""
    acked_command_ids: tuple[str, ...] = ()
    results: tuple[CommandResult, ...] = ()
    output: tuple[OutputChunk, ...] = ()
    wake_units: tuple[tuple[str, str], ...] = ()
    """(apartment, unit) of collected units a request reached on this host."""
    usage: tuple[UsageReading, ...] = ()
    """Receiving side only: the statuses that differ from the receiver's last observation
    of the instance in usage and activity alone (``report_from_pb`` with ``known``),
    instead of in ``changed``. An agent sends every status in ``changed``."""
