"""An instance's output streamed from its host's agent: `landlord instances logs|exec`.

``stream(instance_id, command)`` sends ReadLogs or ExecStream to the instance's host with a
fresh command id and yields the OutputChunks its reports bring, in order, up to the one
with ``end``. Chunks are accepted only from the host the command went to. When the reader
goes away first (the admin's call ended), the host is told to stop (CancelOutput). A host
that disconnects, refuses the command (an agent of a release without it) or says nothing
for ``silence_s`` (without ``follow``) ends the stream with Unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from common.errors import NotFound, Unavailable
from common.stream_commands import CancelOutput, Command, ExecStream, ReadLogs
from common.stream_messages import CommandResult, OutputChunk
from coordinator.fleet.sessions import Fleet
from coordinator.state.cluster_state import ClusterState

__all__ = ["OutputCalls"]

QUEUED = 64
"""Chunks held for a slow reader before the rest is refused (the call ends)."""


@dataclass
class _Awaited:
    host_id: str
    chunks: asyncio.Queue[OutputChunk | CommandResult]


class OutputCalls:
    def __init__(self, state: ClusterState, fleet: Fleet, silence_s: float = 30.0) -> None:
        self._state = state
        self._fleet = fleet
        self._silence_s = silence_s
        self._awaited: dict[str, _Awaited] = {}

    @property
    def open(self) -> int:
        return len(self._awaited)

    async def stream(self, instance_id: str, command: ReadLogs | ExecStream,
                     wait_s: float) -> AsyncIterator[OutputChunk]:
        """The output of ``command`` (for ``instance_id``); ``wait_s``: how long the host
        may be silent before it counts as not answering (0: forever, a follow)."""
        found = self._state.instances.get(instance_id)
        if found is None:
            raise NotFound(f"instance {instance_id} does not exist", instance=instance_id)
        host_id = found.value.host_id
        session = self._fleet.sessions.get(host_id)
        if session is None:
            raise Unavailable(f"host {host_id} of {instance_id} is not connected",
                              host=host_id, instance=instance_id)
        command_id = f"out:{secrets.token_hex(8)}"
        awaited = _Awaited(host_id, asyncio.Queue(maxsize=QUEUED))
        self._awaited[command_id] = awaited
        closed = asyncio.ensure_future(session.closed.wait())
        ended = False
        try:
            session.send(Command(command_id, command))
            self._fleet.commands_sent += 1
            while True:
                got = asyncio.ensure_future(awaited.chunks.get())
                done, _ = await asyncio.wait({got, closed}, timeout=wait_s or None,
                                             return_when=asyncio.FIRST_COMPLETED)
                if got not in done:
                    got.cancel()
                    if closed in done:
                        raise Unavailable(f"host {host_id} disconnected while sending the "
                                          f"output of {instance_id}", host=host_id)
                    raise Unavailable(f"host {host_id} sent nothing of {instance_id} for "
                                      f"{wait_s:g}s", host=host_id)
                item = got.result()
                if isinstance(item, CommandResult):  # the host could not start it
                    ended = True
                    raise Unavailable(f"host {host_id} cannot send the output of "
                                      f"{instance_id}: {item.error}", host=host_id)
                ended = item.end
                yield item
                if ended:
                    return
        finally:
            closed.cancel()
            self._awaited.pop(command_id, None)
            if not ended and not session.closed.is_set():
                session.send(Command(f"cancel:{secrets.token_hex(8)}",
                                     CancelOutput(command_id)))

    def deliver_output(self, host_id: str, chunks: Sequence[OutputChunk]) -> None:
        """Chunks from ``host_id``'s report; those of commands it was not sent are dropped,
        and a reader too slow for its queue loses its stream (the end is forced)."""
        for chunk in chunks:
            awaited = self._awaited.get(chunk.command_id)
            if awaited is None or awaited.host_id != host_id:
                continue
            try:
                awaited.chunks.put_nowait(chunk)
            except asyncio.QueueFull:
                self._awaited.pop(chunk.command_id, None)
                _replace_last(awaited.chunks, OutputChunk(
                    chunk.command_id, end=True,
                    error="the reader fell too far behind; the output was cut"))

    def deliver(self, results: Sequence[CommandResult]) -> None:
        """Failed results of output commands (the host refused them) end their streams."""
        for result in results:
            awaited = self._awaited.get(result.command_id)
            if awaited is not None and not result.ok:
                with contextlib.suppress(asyncio.QueueFull):
                    awaited.chunks.put_nowait(result)


def _replace_last(queue: asyncio.Queue[OutputChunk | CommandResult], item: OutputChunk) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(item)
