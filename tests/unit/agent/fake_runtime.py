"""A recording, in-memory ContainerRuntime for unit tests of the agent's logic.

It records every call, keeps containers as plain state, and lets a test make a container
die (``crash``) the way the engine would: status exited plus a ``die`` event.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.runtime.protocol import (
    EXEC_OUTPUT_CAP,
    ContainerEvent,
    ContainerInfo,
    CreateRequest,
    ExecResult,
    ExecSource,
    ImageInfo,
    LogsSource,
    OutputPiece,
    PullStatus,
)
from common.errors import Conflict, NotFound, Unavailable

ExecHandler = Callable[[str, tuple[str, ...], float], ExecResult]

__all__ = ["RecordingRuntime"]


@dataclass
class _Container:
    info: ContainerInfo
    request: CreateRequest | None = None
    logs: str = ""


@dataclass
class RecordingRuntime:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    containers: dict[str, _Container] = field(default_factory=dict)
    image_list: list[ImageInfo] = field(default_factory=list)
    engine: dict[str, Any] = field(default_factory=lambda: {
        "storage_driver": "overlay2", "backing_filesystem": "extfs", "cgroup_version": "1"})
    fail_create: Exception | None = None
    missing_images: set[str] = field(default_factory=set)
    """References this fake engine does not hold (every other one is there)."""
    pull_error: str = ""
    """When set, every pull fails with this registry error."""
    pull_lines: list[PullStatus] = field(default_factory=list)
    """Progress lines a pull reports."""
    pull_gate: asyncio.Event | None = None
    """When set, a pull waits for it (to start several instances on one pull)."""
    exec_handler: ExecHandler | None = None
    """Answers ``exec`` (container id, argv, timeout); default: exit 0, no output."""
    image_users: dict[str, str] = field(default_factory=dict)
    """The user each image declares (default: none)."""
    files: dict[str, bytes] = field(default_factory=dict)
    """What ``read_file`` finds at each path in any container."""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _subscribers: list[asyncio.Queue[ContainerEvent | None]] = field(default_factory=list)

    def _get(self, container_id: str) -> _Container:
        for key, container in self.containers.items():
            if key == container_id or container.info.name == container_id:
                return container
        raise NotFound(f"no container {container_id}")

    def _set(self, container_id: str, **changes: Any) -> ContainerInfo:
        container = self._get(container_id)
        container.info = replace(container.info, **changes)
        return container.info

    def _emit(self, action: str, info: ContainerInfo, exit_code: int | None = None) -> None:
        event = ContainerEvent(action, info.id, dict(info.labels), 0.0, exit_code)
        for queue in self._subscribers:
            queue.put_nowait(event)

    # -- test controls -------------------------------------------------------------------
    def crash(self, container_id: str, exit_code: int = 137, oom: bool = False) -> None:
        info = self._set(container_id, status="exited", exit_code=exit_code, oom_killed=oom,
                         pid=0)
        self._emit("die", info, exit_code)

    def add_container(self, info: ContainerInfo) -> None:
        self.containers[info.id] = _Container(info)

    def by_call(self, name: str) -> list[Any]:
        return [args for call, args in self.calls if call == name]

    # -- ContainerRuntime ----------------------------------------------------------------
    async def create(self, request: CreateRequest) -> str:
        self.calls.append(("create", request))
        if self.fail_create is not None:
            raise self.fail_create
        if any(c.info.name == request.name for c in self.containers.values()):
            raise Conflict(f"name {request.name} in use")
        container_id = f"{next(self._ids):064x}"
        self.containers[container_id] = _Container(ContainerInfo(
            id=container_id, name=request.name, image=request.image,
            labels=dict(request.labels), status="created", pid=0, exit_code=0,
            oom_killed=False, started_at="", finished_at="0001-01-01T00:00:00Z",
            upper_dir=None), request, logs=f"log of {request.name}\n")
        return container_id

    async def start(self, container_id: str) -> None:
        self.calls.append(("start", container_id))
        self._set(container_id, status="running", pid=40000 + len(self.calls))

    async def stop(self, container_id: str, timeout: float) -> None:
        self.calls.append(("stop", (container_id, timeout)))
        info = self._set(container_id, status="exited", exit_code=0, pid=0)
        self._emit("die", info, 0)

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        self.calls.append(("kill", (container_id, signal)))
        info = self._set(container_id, status="exited", exit_code=137, pid=0)
        self._emit("die", info, 137)

    async def pause(self, container_id: str) -> None:
        self.calls.append(("pause", container_id))
        self._set(container_id, status="paused")

    async def unpause(self, container_id: str) -> None:
        self.calls.append(("unpause", container_id))
        self._set(container_id, status="running")

    async def remove(self, container_id: str, force: bool = False) -> None:
        self.calls.append(("remove", container_id))
        try:
            container = self._get(container_id)
        except NotFound:
            return
        self.containers.pop(container.info.id, None)

    async def inspect(self, container_id: str) -> ContainerInfo:
        container = self._get(container_id)
        info, request = container.info, container.request
        env = [f"{k}={v}" for k, v in request.env.items()] if request else []
        return replace(info, raw={"Id": info.id, "State": {"Status": info.status},
                                  "Config": {"Env": env, "Labels": dict(info.labels)}})

    async def list_containers(self, labels: Mapping[str, str], include_stopped: bool = True
                              ) -> list[ContainerInfo]:
        return [c.info for c in self.containers.values()
                if all(c.info.labels.get(k) == v for k, v in labels.items())
                and (include_stopped or c.info.running)]

    async def logs(self, container_id: str, tail: int) -> str:
        return self._get(container_id).logs

    async def output(self, container_id: str, source: LogsSource | ExecSource
                     ) -> AsyncIterator[OutputPiece]:
        """The container's recorded logs, or what ``exec_handler`` says a command did."""
        if isinstance(source, LogsSource):
            yield OutputPiece(self._get(container_id).logs.encode())
            yield OutputPiece(end=True)
            return
        found = await self.exec(container_id, source.argv, source.timeout, 1 << 20)
        yield OutputPiece(found.stdout)
        yield OutputPiece(found.stderr, stderr=True)
        yield OutputPiece(end=True, exit_code=-1 if found.exit_code is None else found.exit_code)

    async def exec(self, container_id: str, argv: Sequence[str], timeout: float,
                   max_output: int = EXEC_OUTPUT_CAP) -> ExecResult:
        info = self._get(container_id).info
        self.calls.append(("exec", (info.id, tuple(argv), timeout)))
        if info.status != "running":
            raise Conflict(f"container {info.name} is not running")
        if self.exec_handler is None:
            return ExecResult(0)
        found = self.exec_handler(info.id, tuple(argv), timeout)
        cut = len(found.stdout) > max_output or len(found.stderr) > max_output
        return replace(found, stdout=found.stdout[:max_output], stderr=found.stderr[:max_output],
                       truncated=found.truncated or cut)

    async def images(self) -> list[ImageInfo]:
        return list(self.image_list)

    async def remove_image(self, reference: str) -> None:
        self.calls.append(("remove_image", reference))

    async def inspect_image(self, reference: str) -> ImageInfo:
        if reference in self.missing_images:
            raise NotFound(f"image {reference}: not found")
        return ImageInfo(f"sha256:{abs(hash(reference)):064x}"[:71], (reference,), 0.0, 1000, {},
                         user=self.image_users.get(reference, ""))

    async def read_file(self, container_id: str, path: str, max_bytes: int) -> bytes:
        self._get(container_id)
        self.calls.append(("read_file", (container_id, path)))
        return self.files.get(path, b"")[:max_bytes]

    async def pull(self, reference: str, auth: Mapping[str, str] | None,
                   on_status: Callable[[PullStatus], None], timeout: float) -> None:
        self.calls.append(("pull", (reference, dict(auth) if auth else None, timeout)))
        if self.pull_gate is not None:
            await self.pull_gate.wait()
        for line in self.pull_lines:
            on_status(line)
        if self.pull_error:
            raise Unavailable(f"pulling {reference} failed: {self.pull_error}")
        self.missing_images.discard(reference)

    async def info(self) -> Mapping[str, Any]:
        return dict(self.engine)

    async def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]:
        queue: asyncio.Queue[ContainerEvent | None] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while (event := await queue.get()) is not None:
                if all(event.labels.get(k) == v for k, v in labels.items()):
                    yield event
        finally:
            self._subscribers.remove(queue)

    async def ensure_network(self, name: str, subnet: str, interface: str) -> None:
        self.calls.append(("ensure_network", (name, subnet, interface)))

    async def close(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(None)
