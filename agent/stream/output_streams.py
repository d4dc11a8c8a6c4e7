"""Output of ReadLogs and ExecStream commands on its way to the coordinator, in reports.

Each command reads its source (``AgentEndpoint.output``) in a task of its own into a small
queue; each report takes what is queued, a bounded number of bytes in all, taking from the
streams in turn. A queue that is full makes its reader wait (and Docker's thread behind
it): a slow coordinator or a chatty container never grows the agent's memory. The last
chunk of a command has ``end`` set (with the exit code of an exec, or why it stopped).
CancelOutput, or the session ending, cancels a stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from agent.runtime.protocol import OutputPiece
from common.errors import LandlordError
from common.stream_commands import ExecStream, ReadLogs
from common.stream_messages import OutputChunk

__all__ = ["OutputStreams"]

log = logging.getLogger(__name__)

REPORT_BUDGET = 256 * 1024
"""Bytes of output one report carries at most."""
QUEUED = 8
"""Chunks a stream queues before its reader waits."""
MAX_STREAMS = 32
"""Output streams one agent serves at once."""

OpenOutput = Callable[[ReadLogs | ExecStream], AsyncIterator[OutputPiece]]


class OutputStreams:
    def __init__(self, open_output: OpenOutput, wake: Callable[[], None]) -> None:
        """``open_output``: the source of a command; ``wake``: a report is worth sending."""
        self._open = open_output
        self._wake = wake
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._queues: dict[str, asyncio.Queue[OutputChunk]] = {}

    @property
    def active(self) -> int:
        return len(self._tasks)

    @property
    def pending(self) -> bool:
        """Output waits for a report."""
        return any(not q.empty() for q in self._queues.values())

    def start(self, command_id: str, command: ReadLogs | ExecStream) -> None:
        if command_id in self._queues:
            return  # a replay of a stream under way
        queue: asyncio.Queue[OutputChunk] = asyncio.Queue(maxsize=QUEUED)
        self._queues[command_id] = queue
        if len(self._tasks) >= MAX_STREAMS:
            queue.put_nowait(OutputChunk(command_id, end=True, error=(
                f"this host serves {MAX_STREAMS} output streams already; try again later")))
            self._wake()
            return
        self._tasks[command_id] = asyncio.create_task(self._run(command_id, command, queue),
                                                      name=f"output-{command_id}")

    def cancel(self, command_id: str) -> None:
        """Stop a stream and drop what it queued (its reader is gone)."""
        task = self._tasks.pop(command_id, None)
        if task is not None:
            task.cancel()
        self._queues.pop(command_id, None)

    def close(self) -> None:
        for command_id in list(self._queues):
            self.cancel(command_id)

    def take(self, budget: int = REPORT_BUDGET) -> tuple[OutputChunk, ...]:
        """Queued chunks for a report: from each stream in turn, until ``budget`` bytes."""
        taken: list[OutputChunk] = []
        used, moved = 0, True
        while moved and used < budget:
            moved = False
            for command_id, queue in list(self._queues.items()):
                if queue.empty() or used >= budget:
                    continue
                chunk = queue.get_nowait()
                taken.append(chunk)
                used += len(chunk.data)
                moved = True
                if chunk.end:  # nothing follows: the stream is done
                    self._queues.pop(command_id, None)
                    self._tasks.pop(command_id, None)
        return tuple(taken)

    async def _run(self, command_id: str, command: ReadLogs | ExecStream,
                   queue: asyncio.Queue[OutputChunk]) -> None:
        end = OutputChunk(command_id, end=True)
        try:
            stream = self._open(command)
            try:
                async for piece in stream:
                    chunk = OutputChunk(command_id, piece.data, piece.stderr, piece.end,
                                        piece.exit_code, piece.error)
                    if piece.end:
                        end = chunk
                        break
                    await queue.put(chunk)
                    self._wake()
            finally:  # a cancelled stream closes Docker's (and kills an exec) now
                closing = getattr(stream, "aclose", None)
                if closing is not None:
                    await closing()
        except LandlordError as exc:
            end = OutputChunk(command_id, end=True, error=str(exc))
        except Exception as exc:  # the stream reports it; the agent goes on
            log.warning("output of %s failed: %r", command_id, exc)
            end = OutputChunk(command_id, end=True, error=f"the agent failed: {exc}")
        await queue.put(end)
        self._wake()
