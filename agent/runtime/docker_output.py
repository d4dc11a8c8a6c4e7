"""Output read from Docker's blocking streams: the bounded capture of a check's ``exec``,
and streamed logs and exec output for `landlord instances logs|exec`.

A streamed read runs in a thread of its own that hands each piece to the event loop through
a small queue: when the reader (the stream to the coordinator) is slow, the thread waits,
so an agent never holds more than a few pieces of anyone's output. Closing the iterator
closes Docker's stream (the thread's blocked read ends) and kills a command still running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import psutil

from agent.runtime.protocol import ExecResult, ExecSource, LogsSource, OutputPiece
from common.errors import LandlordError

__all__ = ["Capture", "close_stream", "kill_tree", "stream_output"]

log = logging.getLogger(__name__)

QUEUED = 16
"""Pieces waiting for the reader before the Docker-side thread waits."""
PIECE = 32 * 1024
"""Largest piece handed on (Docker's frames can be larger)."""
_DONE = object()

Call = Callable[..., Awaitable[Any]]
"""``DockerRuntime._call``: runs a blocking SDK call in its pool, translating errors."""


class Capture:
    """Reads an exec's demultiplexed output, keeping the first ``cap`` bytes of each
    stream (the rest is read, so the command never blocks on a full pipe, and dropped)."""

    def __init__(self, cap: int) -> None:
        self.cap = max(0, cap)
        self.out = bytearray()
        self.err = bytearray()
        self.truncated = False
        self.done = threading.Event()

    def read(self, stream: Any) -> None:
        try:
            for out, err in stream:
                self._keep(self.out, out)
                self._keep(self.err, err)
        except Exception as exc:  # closed at the deadline, or the engine went away
            log.debug("exec output stream ended: %s", exc)
        finally:
            close_stream(stream)
            self.done.set()

    def _keep(self, into: bytearray, data: bytes | None) -> None:
        if not data:
            return
        room = self.cap - len(into)
        if len(data) > room:
            self.truncated = True
        if room > 0:
            into += data[:room]

    def result(self, exit_code: int | None, timed_out: bool = False) -> ExecResult:
        return ExecResult(exit_code, bytes(self.out), bytes(self.err), self.truncated,
                          timed_out)


def close_stream(stream: Any) -> None:
    """Shut the exec's socket down (a blocked read returns) and release the response that
    holds it, so no file descriptor is left open (safe to call twice, from two threads)."""
    with contextlib.suppress(Exception):
        stream.close()
    response = getattr(stream, "_response", None)  # the SDK's CancellableStream keeps it
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


def kill_tree(pid: int) -> None:
    """SIGKILL a process and then every descendant found before (the parent first, so a
    shell cannot report its children's deaths)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for proc in family:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _pieces(item: Any) -> list[OutputPiece]:
    """A logs chunk (bytes) or an exec frame ((stdout, stderr)) as pieces."""
    if isinstance(item, tuple):
        out, err = item
        return [*_cut(out, False), *_cut(err, True)]
    return _cut(item, False)


def _cut(data: bytes | None, stderr: bool) -> list[OutputPiece]:
    if not data:
        return []
    return [OutputPiece(data[i:i + PIECE], stderr) for i in range(0, len(data), PIECE)]


async def _pump(stream: Iterable[Any], deadline: float | None = None
                ) -> AsyncIterator[OutputPiece]:
    """The pieces of a blocking Docker stream, read in a thread with backpressure; raises
    TimeoutError at ``deadline`` (the loop's time)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUED)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            try:
                future.result(timeout=0.5)
                return True
            except concurrent.futures.TimeoutError:
                future.cancel()
            except RuntimeError:  # the loop is gone: the agent is stopping
                return False
        return False

    def read() -> None:
        try:
            for item in stream:
                for piece in _pieces(item):
                    if not put(piece):
                        return
        except Exception as exc:  # closed by the reader going away, or the engine
            log.debug("output stream ended: %s", exc)
        finally:
            close_stream(stream)
            put(_DONE)

    threading.Thread(target=read, daemon=True, name="output-stream").start()
    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            item = await asyncio.wait_for(queue.get(), left)
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        close_stream(stream)


async def stream_output(call: Call, api: Any, container_id: str,
                        source: LogsSource | ExecSource) -> AsyncIterator[OutputPiece]:
    """See ``ContainerRuntime.output``; ``api`` is a low-level client whose socket
    outlasts the longest exec."""
    what = f"output of {container_id[:12]}"
    if isinstance(source, LogsSource):
        stream = await call(what, api.logs, container_id, stdout=True, stderr=True,
                            stream=True, follow=source.follow, timestamps=False,
                            since=source.since or None, tail=source.tail or "all")
        async for piece in _pump(stream):
            yield piece
        yield OutputPiece(end=True)
        return
    if not source.argv:
        yield OutputPiece(end=True, error="exec needs a command")
        return
    created = await call(what, api.exec_create, container_id, list(source.argv),
                         stdout=True, stderr=True)
    exec_id = str(created["Id"])
    stream = await call(what, api.exec_start, exec_id, stream=True, demux=True)
    finished = False
    deadline = asyncio.get_running_loop().time() + source.timeout
    try:
        async for piece in _pump(stream, deadline):
            yield piece
        finished = True
    except TimeoutError:
        pass
    finally:
        if not finished:  # timed out, or the reader went away: the command goes too
            await _kill_exec(call, api, exec_id)
    if not finished:
        log.info("exec in %s killed after %gs", container_id[:12], source.timeout)
        yield OutputPiece(end=True)  # exit code -1: killed at its timeout
        return
    state = await call(what, api.exec_inspect, exec_id)
    for _ in range(50):  # the stream can end a moment before the exit code is set
        if not state.get("Running"):
            break
        await asyncio.sleep(0.02)
        state = await call(what, api.exec_inspect, exec_id)
    code = state.get("ExitCode")
    yield OutputPiece(end=True, exit_code=int(code) if code is not None else -1)


async def _kill_exec(call: Call, api: Any, exec_id: str) -> None:
    with contextlib.suppress(LandlordError):
        state = await call("exec inspect", api.exec_inspect, exec_id)
        pid = int(state.get("Pid") or 0)
        if pid > 0 and state.get("Running"):
            await asyncio.to_thread(kill_tree, pid)
