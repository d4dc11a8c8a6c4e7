"""What the coordinator tells agents on the agent stream, as plain dataclasses both ends use.

Every command travels in a ``Command`` with an id: the agent runs a command id once and
acknowledges it in its next report, so a replay after a reconnect is harmless. The
protobuf is converted at each end by ``common.stream_convert``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from common.gc_kinds import GcKind
from common.resources import Resources
from common.stream_messages import RouteServer
from common.unit_spec import HealthCheck

__all__ = [
    "COMMAND_KINDS",
    "OUTPUT_COMMANDS",
    "AgentCommand",
    "CancelOutput",
    "CollectGarbage",
    "Command",
    "DrainInstance",
    "ExecStream",
    "PauseInstance",
    "ReadLogs",
    "ResumeInstance",
    "RunCheck",
    "SetRoute",
    "SetWeights",
    "StartInstance",
    "StopInstance",
]


@dataclass(frozen=True)
class StartInstance:
    """Run one instance of a unit version on the receiving host."""

    instance_id: str
    apartment: str
    unit: str
    version: str
    slot: str
    """blue or green."""
    image: str
    port: int
    """The host port assigned to this instance (it listens on the host address there)."""
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    health: HealthCheck = field(default_factory=HealthCheck)
    healthy_threshold: int = 1
    """Consecutive passed probes before the instance is healthy (and ready)."""
    warmup_s: float = 0.0
    """Seconds after start before failed probes count."""
    resources: Resources = field(default_factory=Resources)
    service_port: int = 0
    state_mode: str = "none"
    """none, shared or snapshot."""
    idle_timeout_s: float = 0.0
    """Seconds without activity before GC may collect the instance; 0 = never."""
    state_from_instance_id: str = ""
    """Snapshot mode: start from a copy of this instance's state."""
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Env whose values the container gets but no label, event or dump shows."""
    network_mode: str = ""
    """bridge, host, or "" for the default (``common.network_modes``)."""
    run_as_root: bool = False
    """The unit asked to run as root (else the image's user or an unprivileged uid)."""


@dataclass(frozen=True)
class StopInstance:
    instance_id: str
    grace_s: float = 30.0
    """Seconds between SIGTERM and SIGKILL; 0 = the agent's default."""
    drain: bool = True
    """Drain the instance out of the data plane first."""
    collect: bool = False
    """Idle collection: back the state up and keep a ``collected`` record for a wake."""


@dataclass(frozen=True)
class SetRoute:
    """The whole desired data plane of one unit on the receiving host."""

    apartment: str
    unit: str
    service_port: int
    health_path: str
    servers: tuple[RouteServer, ...] = ()
    protected_versions: tuple[str, ...] = ()
    """Versions whose images the host's GC keeps (the unit's stable and previous stable)."""
    sticky: bool = False
    """Keep each client on the version that served it (cookie) while that version has a
    ready server: set only while a sticky rollout's traffic steps run."""
    retry_after_s: int = 0
    """Every instance of the unit is paused: its entry point answers 503 with this
    ``Retry-After`` (seconds) at once; 0 = not paused."""
    wake_on_request: bool = False
    """Every instance of the unit is collected or waking: hold requests, ask for a wake."""


@dataclass(frozen=True)
class SetWeights:
    apartment: str
    unit: str
    weights: Mapping[str, int]
    """Server (instance id) -> weight."""


@dataclass(frozen=True)
class DrainInstance:
    apartment: str
    unit: str
    instance_id: str
    timeout_s: float = 30.0
    """0 = the agent's default."""


# -- pause and resume (issue 17) ------------------------------------------------------------
@dataclass(frozen=True)
class PauseInstance:
    """Freeze the instance's container (cgroup freezer), memory and state kept. The
    coordinator took it out of every host's route first; the host drains it locally, waits
    ``settle_s`` for requests other hosts still had on it, then freezes it."""

    instance_id: str
    settle_s: float = 0.0
    """0 = the agent's default."""


@dataclass(frozen=True)
class ResumeInstance:
    """Thaw a paused instance (same process, same memory); health checks start again and
    the coordinator routes it once it reports running and healthy."""

    instance_id: str
# -- end of pause and resume ---------------------------------------------------------------


@dataclass(frozen=True)
class CollectGarbage:
    kinds: tuple[GcKind, ...] = ()
    """Empty: every kind."""


@dataclass(frozen=True)
class RunCheck:
    """Run ``argv`` in the instance's container; answered by a CommandResult with the
    exit code and output."""

    instance_id: str
    argv: tuple[str, ...]
    timeout_s: float = 0.0
    """0 = the agent's default (30 s)."""


@dataclass(frozen=True)
class ReadLogs:
    """Stream the instance's container output back (OutputChunks with this command's id),
    ending with an ``end`` chunk; with ``follow``, until CancelOutput or the container
    stops."""

    instance_id: str
    follow: bool = False
    since: float = 0.0
    """Epoch seconds; 0 = from the start."""
    tail: int = 0
    """The last lines only; 0 = all."""


@dataclass(frozen=True)
class ExecStream:
    """Run ``argv`` in the instance's container and stream its output back; the ``end``
    chunk carries the exit code."""

    instance_id: str
    argv: tuple[str, ...]
    timeout_s: float = 0.0
    """0 = the agent's default (30 s)."""


@dataclass(frozen=True)
class CancelOutput:
    """Stop the output of a ReadLogs or ExecStream command."""

    command_id: str


OUTPUT_COMMANDS = (ReadLogs, ExecStream)
"""Commands answered in OutputChunks rather than one CommandResult."""

AgentCommand = (StartInstance | StopInstance | SetRoute | SetWeights | DrainInstance
                | CollectGarbage | RunCheck | ReadLogs | ExecStream | CancelOutput
                | PauseInstance | ResumeInstance)

COMMAND_KINDS: Mapping[type[AgentCommand], str] = {
    StartInstance: "start", StopInstance: "stop", SetRoute: "route", SetWeights: "weights",
    DrainInstance: "drain", CollectGarbage: "gc", RunCheck: "run_check",
    ReadLogs: "read_logs", ExecStream: "exec_stream", CancelOutput: "cancel_output",
    PauseInstance: "pause", ResumeInstance: "resume",
}
"""Each command's name on the wire (its field in agent.proto's ``Command.action``)."""


@dataclass(frozen=True)
class Command:
    """A command with its id; the id makes a replay harmless."""

    command_id: str
    command: AgentCommand
