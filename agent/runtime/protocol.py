"""The container runtime interface: small, async, in the agent's own types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "EXEC_OUTPUT_CAP",
    "ContainerEvent",
    "ContainerInfo",
    "ContainerRuntime",
    "CreateRequest",
    "ExecResult",
    "ExecSource",
    "ImageInfo",
    "LogsSource",
    "Mount",
    "OutputPiece",
    "PullStatus",
]

EXEC_OUTPUT_CAP = 4096
"""Bytes of stdout and of stderr an exec keeps by default (the rest is read and dropped)."""


@dataclass(frozen=True)
class Mount:
    """A host directory bind-mounted into the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class CreateRequest:
    """Everything needed to create one container; built by pure code, run by the runtime."""

    name: str
    image: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    labels: Mapping[str, str]
    nano_cpus: int
    mem_limit: int
    memswap_limit: int
    pids_limit: int
    mounts: tuple[Mount, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    network_mode: str = "host"
    """"host", or the name of the network the container joins."""
    published: Mapping[int, tuple[str, int]] = field(default_factory=dict)
    """Container port -> (host address, host port) it is published on (docker-proxy)."""
    read_only: bool = True
    init: bool = True
    security_opt: tuple[str, ...] = ("no-new-privileges:true",)
    cap_drop: tuple[str, ...] = ("ALL",)
    storage_opt: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = "SIGTERM"
    log_max_size: str = "10m"
    user: str = ""
    """``uid[:gid]`` or ``name[:group]`` the process runs as; empty: the image's user."""


@dataclass(frozen=True)
class ContainerInfo:
    """What the agent needs to know of one container."""

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    status: str
    """Docker's status: created, running, paused, restarting, exited, dead."""
    pid: int
    exit_code: int
    oom_killed: bool
    started_at: str
    finished_at: str
    upper_dir: str | None = None
    """Writable layer on the host (overlay2 UpperDir), when the driver exposes it."""
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")


@dataclass(frozen=True)
class ContainerEvent:
    """One container event from the engine's stream (die, oom, start, ...)."""

    action: str
    container_id: str
    labels: Mapping[str, str]
    time: float
    exit_code: int | None = None


@dataclass(frozen=True)
class ImageInfo:
    """A local image with its tags and the digest references it was pulled or pushed by."""

    id: str
    tags: tuple[str, ...]
    created: float
    size: int
    labels: Mapping[str, str]
    digests: tuple[str, ...] = ()
    """``NAME@sha256:...`` references (Docker's RepoDigests)."""
    user: str = ""
    """The user the image declares (``Config.User``; empty: none)."""

    @property
    def references(self) -> tuple[str, ...]:
        """Every name the image answers to: tags, then digest references."""
        return self.tags + self.digests


@dataclass(frozen=True)
class PullStatus:
    """One progress line of an image pull, as the engine reports it."""

    layer: str
    """The layer's short id ("" for lines about the whole image)."""
    status: str
    """Downloading, Download complete, Already exists, Pull complete, ..."""
    current: int = 0
    total: int = 0


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside a container did."""

    exit_code: int | None
    """None when it did not finish (timed out and killed)."""
    stdout: bytes = b""
    stderr: bytes = b""
    """The first ``max_output`` bytes of each stream."""
    truncated: bool = False
    """Output beyond ``max_output`` was dropped."""
    timed_out: bool = False


@dataclass(frozen=True)
class LogsSource:
    """A container's output (stdout and stderr together, as ``docker logs``)."""

    follow: bool = False
    since: float = 0.0
    """Epoch seconds; 0 = from the start."""
    tail: int = 0
    """The last lines only; 0 = all."""


@dataclass(frozen=True)
class ExecSource:
    """A command run in the container, its output as it comes."""

    argv: tuple[str, ...]
    timeout: float


@dataclass(frozen=True)
class OutputPiece:
    """A piece of streamed output; the last one has ``end`` set."""

    data: bytes = b""
    stderr: bool = False
    end: bool = False
    exit_code: int = -1
    """With ``end``, an exec's exit code (-1: none: killed at its timeout)."""
    error: str = ""


class ContainerRuntime(Protocol):
    """Async facade over the container engine. Raises ``common.errors`` types only."""

    async def create(self, request: CreateRequest) -> str:
        """Create a container; returns its id."""
        ...

    async def start(self, container_id: str) -> None: ...

    async def stop(self, container_id: str, timeout: float) -> None:
        """SIGTERM (the stop signal), then SIGKILL after ``timeout`` seconds."""
        ...

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None: ...

    async def pause(self, container_id: str) -> None:
        """Freeze every process of the container (cgroup freezer); status ``paused``."""
        ...

    async def unpause(self, container_id: str) -> None: ...

    async def remove(self, container_id: str, force: bool = False) -> None:
        """Remove a container; a missing one is not an error."""
        ...

    async def inspect(self, container_id: str) -> ContainerInfo:
        """Raises NotFound when the container does not exist."""
        ...

    async def list_containers(self, labels: Mapping[str, str], include_stopped: bool = True
                   ) -> list[ContainerInfo]: ...

    async def logs(self, container_id: str, tail: int) -> str: ...

    async def exec(self, container_id: str, argv: Sequence[str], timeout: float,
                   max_output: int = EXEC_OUTPUT_CAP) -> ExecResult:
        """Run ``argv`` (no shell) in the running container, as its user, and wait for it;
        a command still running after ``timeout`` seconds is killed (``timed_out``).
        Raises NotFound for a missing container, Conflict/FailedPrecondition for one that
        is not running, or when the command cannot be started."""
        ...

    def output(self, container_id: str, source: LogsSource | ExecSource
               ) -> AsyncIterator[OutputPiece]:
        """The container's logs or a command's output as it comes, ending with an ``end``
        piece; closing the iterator stops it (and kills a command still running)."""
        ...

    async def read_file(self, container_id: str, path: str, max_bytes: int) -> bytes:
        """The first ``max_bytes`` of a regular file in a (created or running) container's
        filesystem; empty when it does not exist."""
        ...

    async def images(self) -> list[ImageInfo]: ...

    async def inspect_image(self, reference: str) -> ImageInfo:
        """The local image ``reference`` names (tag, digest reference or id); NotFound when
        this host does not hold it."""
        ...

    async def pull(self, reference: str, auth: Mapping[str, str] | None,
                   on_status: Callable[[PullStatus], None], timeout: float) -> None:
        """Pull ``reference`` (by digest when it has one) with ``auth`` (username and
        password) for its registry, calling ``on_status`` in the event loop for every
        progress line. Raises Unavailable with the registry's error text when the pull
        fails or takes longer than ``timeout`` seconds."""
        ...

    async def remove_image(self, reference: str) -> None: ...

    async def info(self) -> Mapping[str, Any]:
        """Engine facts: storage driver and its backing filesystem, cgroup version."""
        ...

    def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]:
        """Container events of containers carrying ``labels``, until cancelled."""
        ...

    async def ensure_network(self, name: str, subnet: str, interface: str) -> None:
        """Create the bridge network ``name`` on ``subnet`` (Linux bridge ``interface``)
        unless it exists; FailedPrecondition when one of that name has another subnet."""
        ...

    async def close(self) -> None: ...
