"""ContainerRuntime over the ``docker`` SDK.

The SDK is synchronous: every call runs in a small thread pool, and the event stream
runs in its own thread feeding an asyncio queue. Docker and requests exceptions are
translated to ``common.errors`` here and nowhere else.

``exec`` reads the command's output in a thread of its own (on a client whose socket
timeout outlasts the longest exec), keeps the first bytes of each stream and drops the
rest; at its deadline it kills the command's processes (the exec's host pid and its
descendants) and closes the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig

from agent.runtime.docker_files import read_container_file
from agent.runtime.docker_networks import ensure_bridge_network
from agent.runtime.docker_output import Capture, close_stream, kill_tree, stream_output
from agent.runtime.docker_pull import pull_image
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
from common.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    LandlordError,
    NotFound,
    Unavailable,
)

__all__ = ["MAX_EXEC_TIMEOUT", "DockerRuntime", "container_info_from_inspect"]

log = logging.getLogger(__name__)
T = TypeVar("T")
WATCHED_ACTIONS = ("start", "die", "oom", "destroy")
MAX_EXEC_TIMEOUT = 300.0
"""Longest an exec may run; its output socket never times out before that."""
EXEC_CLOSE_WAIT = 5.0
"""How long a timed-out exec's reader may take to notice its stream was closed."""


def _translate(exc: Exception, what: str) -> LandlordError:
    if isinstance(exc, docker.errors.NotFound):
        return NotFound(f"{what}: not found ({exc.explanation or exc})", target=what)
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        if status == 409:
            return Conflict(f"{what}: {exc.explanation or exc}", target=what)
        if status >= 500:
            return Unavailable(f"{what}: docker engine error: {exc.explanation or exc}")
        return FailedPrecondition(f"{what}: {exc.explanation or exc}", target=what)
    return Unavailable(f"{what}: cannot reach docker: {exc}", target=what)


def container_info_from_inspect(data: Mapping[str, Any]) -> ContainerInfo:
    """Our view of a ``docker inspect`` document."""
    state = data.get("State") or {}
    config = data.get("Config") or {}
    driver = (data.get("GraphDriver") or {}).get("Data") or {}
    return ContainerInfo(
        id=data["Id"],
        name=str(data.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        labels=dict(config.get("Labels") or {}),
        status=str(state.get("Status", "unknown")),
        pid=int(state.get("Pid") or 0),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        started_at=str(state.get("StartedAt", "")),
        finished_at=str(state.get("FinishedAt", "")),
        upper_dir=driver.get("UpperDir"),
        raw=data,
    )


class DockerRuntime:
    """The real engine, over its unix socket (or any URL the SDK takes)."""

    def __init__(self, base_url: str = "unix:///var/run/docker.sock", workers: int = 8,
                 timeout: float = 60.0) -> None:
        self._api = docker.APIClient(base_url=base_url, timeout=int(timeout))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docker")
        self._exec_api = docker.APIClient(base_url=base_url,
                                          timeout=int(MAX_EXEC_TIMEOUT + 30))
        self._follow_api = docker.APIClient(base_url=base_url, timeout=None)
        """Followed logs: a quiet container may say nothing for hours."""

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise _translate(exc, what) from exc

    async def create(self, request: CreateRequest) -> str:
        api = self._api
        host_config = api.create_host_config(
            network_mode=request.network_mode,
            port_bindings={port: bind for port, bind in request.published.items()} or None,
            nano_cpus=request.nano_cpus,
            mem_limit=request.mem_limit,
            memswap_limit=request.memswap_limit,
            pids_limit=request.pids_limit,
            binds={m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
                   for m in request.mounts},
            tmpfs=dict(request.tmpfs),
            read_only=request.read_only,
            init=request.init,
            security_opt=list(request.security_opt),
            cap_drop=list(request.cap_drop),
            storage_opt=dict(request.storage_opt) or None,
            restart_policy={"Name": "no"},
            auto_remove=False,
            log_config=LogConfig(type="json-file",
                                 config={"max-size": request.log_max_size, "max-file": "2"}),
        )
        created = await self._call(
            f"create {request.name}", api.create_container,
            image=request.image,
            command=list(request.command) or None,
            name=request.name,
            environment=dict(request.env),
            labels=dict(request.labels),
            host_config=host_config,
            ports=list(request.published) or None,
            stop_signal=request.stop_signal,
            user=request.user or None,
        )
        return str(created["Id"])

    async def start(self, container_id: str) -> None:
        await self._call(f"start {container_id[:12]}", self._api.start, container_id)

    async def stop(self, container_id: str, timeout: float) -> None:
        await self._call(f"stop {container_id[:12]}", self._api.stop, container_id,
                         timeout=max(0, round(timeout)))

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        await self._call(f"kill {container_id[:12]}", self._api.kill, container_id, signal)

    async def pause(self, container_id: str) -> None:
        await self._call(f"pause {container_id[:12]}", self._api.pause, container_id)

    async def unpause(self, container_id: str) -> None:
        await self._call(f"unpause {container_id[:12]}", self._api.unpause, container_id)

    async def remove(self, container_id: str, force: bool = False) -> None:
        with contextlib.suppress(NotFound):
            await self._call(f"remove {container_id[:12]}", self._api.remove_container,
                             container_id, force=force, v=True)

    async def inspect(self, container_id: str) -> ContainerInfo:
        data = await self._call(f"inspect {container_id[:12]}", self._api.inspect_container,
                                container_id)
        return container_info_from_inspect(data)

    async def read_file(self, container_id: str, path: str, max_bytes: int) -> bytes:
        with contextlib.suppress(NotFound):
            return await self._call(f"read {path} in {container_id[:12]}",
                                    read_container_file, self._api, container_id, path, max_bytes)
        return b""

    async def list_containers(self, labels: Mapping[str, str], include_stopped: bool = True
                   ) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" if v else k for k, v in labels.items()]}
        summaries = await self._call("list containers", self._api.containers,
                                     all=include_stopped, filters=filters)
        out: list[ContainerInfo] = []
        for summary in summaries:
            with contextlib.suppress(NotFound):  # removed between list and inspect
                out.append(await self.inspect(summary["Id"]))
        return out

    async def logs(self, container_id: str, tail: int) -> str:
        data = await self._call(f"logs {container_id[:12]}", self._api.logs, container_id,
                                stdout=True, stderr=True, tail=tail, timestamps=True)
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    async def exec(self, container_id: str, argv: Sequence[str], timeout: float,
                   max_output: int = EXEC_OUTPUT_CAP) -> ExecResult:
        if not argv:
            raise InvalidArgument("exec needs a command")
        what = f"exec in {container_id[:12]}"
        limit = min(max(timeout, 0.0), MAX_EXEC_TIMEOUT)
        created = await self._call(what, self._exec_api.exec_create, container_id,
                                   list(argv), stdout=True, stderr=True)
        exec_id = str(created["Id"])
        stream = await self._call(what, self._exec_api.exec_start, exec_id, stream=True,
                                  demux=True)
        capture = Capture(max_output)
        reader = threading.Thread(target=capture.read, args=(stream,), daemon=True,
                                  name=f"exec-{exec_id[:12]}")
        reader.start()
        finished = await asyncio.to_thread(capture.done.wait, limit)
        if not finished:
            with contextlib.suppress(LandlordError):
                await self._kill_exec(exec_id)
            close_stream(stream)  # the reader's blocked read ends; it closes it too
            await asyncio.to_thread(capture.done.wait, EXEC_CLOSE_WAIT)
            return capture.result(None, timed_out=True)
        state = await self._call(what, self._exec_api.exec_inspect, exec_id)
        for _ in range(50):  # the stream can end a moment before the exit code is set
            if not state.get("Running"):
                break
            await asyncio.sleep(0.02)
            state = await self._call(what, self._exec_api.exec_inspect, exec_id)
        code = state.get("ExitCode")
        return capture.result(int(code) if code is not None else None)

    async def _kill_exec(self, exec_id: str) -> None:
        state = await self._call("exec inspect", self._exec_api.exec_inspect, exec_id)
        pid = int(state.get("Pid") or 0)
        if pid > 0 and state.get("Running"):
            await asyncio.to_thread(kill_tree, pid)

    def output(self, container_id: str, source: LogsSource | ExecSource
               ) -> AsyncIterator[OutputPiece]:
        follow = isinstance(source, LogsSource) and source.follow
        return stream_output(self._call, self._follow_api if follow else self._exec_api,
                             container_id, source)

    async def images(self) -> list[ImageInfo]:
        rows = await self._call("list images", self._api.images)
        return [_image_info(row) for row in rows]

    async def inspect_image(self, reference: str) -> ImageInfo:
        data = await self._call(f"image {reference}", self._api.inspect_image, reference)
        created = data.get("Created") or ""
        return _image_info({**data, "Created": _parse_created(created)})

    async def pull(self, reference: str, auth: Mapping[str, str] | None,
                   on_status: Callable[[PullStatus], None], timeout: float) -> None:
        await pull_image(self._exec_api, reference, auth, on_status, timeout)

    async def remove_image(self, reference: str) -> None:
        await self._call(f"remove image {reference}", self._api.remove_image, reference,
                         noprune=False)

    async def info(self) -> Mapping[str, Any]:
        data = await self._call("info", self._api.info)
        status = dict(data.get("DriverStatus") or [])
        return {
            "storage_driver": data.get("Driver", ""),
            "backing_filesystem": status.get("Backing Filesystem", ""),
            "cgroup_version": str(data.get("CgroupVersion", "1")),
            "cgroup_driver": data.get("CgroupDriver", ""),
        }

    async def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]:
        """Engine events in a thread; reconnects with ``since`` so nothing is missed."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ContainerEvent | None] = asyncio.Queue()
        stop = threading.Event()
        current: list[Any] = []
        filters = {"type": ["container"], "event": list(WATCHED_ACTIONS),
                   "label": [f"{k}={v}" if v else k for k, v in labels.items()]}

        def deliver(item: ContainerEvent | None) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def pump() -> None:
            since: float | None = None
            while not stop.is_set():
                try:
                    stream = self._api.events(decode=True, filters=filters, since=since)
                    current[:] = [stream]
                    for raw in stream:
                        event = _parse_event(raw)
                        since = event.time
                        deliver(event)
                except Exception as exc:  # stream broke: reconnect unless stopping
                    if stop.is_set():
                        break
                    log.warning("docker event stream failed, reconnecting: %s", exc)
                if not stop.is_set():
                    time.sleep(0.5)
                    since = since if since is not None else time.time() - 1
            deliver(None)

        thread = threading.Thread(target=pump, name="docker-events", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            stop.set()
            for stream in current:
                with contextlib.suppress(Exception):
                    stream.close()

    async def ensure_network(self, name: str, subnet: str, interface: str) -> None:
        await self._call(f"network {name}", ensure_bridge_network, self._api, name, subnet,
                         interface)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api.close()
        self._exec_api.close()
        self._follow_api.close()


def _image_info(row: Mapping[str, Any]) -> ImageInfo:
    """An image of ``GET /images/json`` or of an inspect (same keys, save Created)."""
    return ImageInfo(
        id=row["Id"], tags=tuple(t for t in (row.get("RepoTags") or ()) if t != "<none>:<none>"),
        created=float(row.get("Created") or 0), size=int(row.get("Size") or 0),
        labels=dict(row.get("Labels") or (row.get("Config") or {}).get("Labels") or {}),
        digests=tuple(d for d in (row.get("RepoDigests") or ()) if "<none>" not in d),
        user=str((row.get("Config") or {}).get("User") or ""))


def _parse_created(text: Any) -> float:
    """An inspect's Created (RFC 3339 with nanoseconds) as epoch seconds (0 if unreadable)."""
    if isinstance(text, int | float):
        return float(text)
    with contextlib.suppress(ValueError):
        trimmed = str(text).split(".")[0].rstrip("Z")
        return datetime.fromisoformat(trimmed + "+00:00").timestamp()
    return 0.0


def _parse_event(raw: Mapping[str, Any]) -> ContainerEvent:
    actor = raw.get("Actor") or {}
    attributes = dict(actor.get("Attributes") or {})
    exit_code = attributes.pop("exitCode", None)
    nanos = raw.get("timeNano")
    moment = nanos / 1e9 if isinstance(nanos, int) else float(raw.get("time") or time.time())
    return ContainerEvent(
        action=str(raw.get("Action") or raw.get("status") or ""),
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        labels=attributes,
        time=moment,
        exit_code=int(exit_code) if exit_code is not None else None,
    )
