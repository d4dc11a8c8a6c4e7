"""The coordinator's commands on this agent: queued in arrival order, run one at a time,
acknowledged with their results in the next report.

A command id already queued is not queued twice (a replay after a reconnect). RunCheck (a
command in a container, bounded by its own timeout) runs beside the others, so it holds
nothing up. ReadLogs and ExecStream start an output stream (``OutputStreams``) and are
acknowledged at once; their output follows in later reports. A command this agent cannot
read is answered at once with a failed result.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from agent.stream.endpoint import AgentEndpoint
from agent.stream.output_streams import OutputStreams
from common.errors import LandlordError
from common.gen.landlord.v1 import agent_pb2
from common.stream_commands import AgentCommand, CancelOutput, ExecStream, ReadLogs, RunCheck
from common.stream_convert import command_from_pb
from common.stream_messages import CommandResult

__all__ = ["CommandQueue"]

log = logging.getLogger(__name__)


class CommandQueue:
    def __init__(self, endpoint: AgentEndpoint) -> None:
        self.endpoint = endpoint
        self.done = asyncio.Event()
        """Set when a command finished (its result should be reported soon)."""
        self.commands_run = 0
        self._queue: asyncio.Queue[tuple[str, AgentCommand]] = asyncio.Queue()
        self._queued: set[str] = set()
        self._acks: list[str] = []
        self._results: list[CommandResult] = []
        self.outputs = OutputStreams(endpoint.output, self.done.set)

    def offer(self, pb: agent_pb2.Command) -> None:
        """Queue a command received from the coordinator (once per id)."""
        command_id = pb.command_id
        if command_id in self._queued:
            return
        try:
            command = command_from_pb(pb).command
        except (ValueError, LandlordError) as exc:
            self._results.append(CommandResult(command_id, ok=False, error=str(exc)))
            self.done.set()
            return
        self._queued.add(command_id)
        self._queue.put_nowait((command_id, command))

    @property
    def has_news(self) -> bool:
        """Acknowledgements or results wait for a report."""
        return bool(self._acks or self._results) or self.outputs.pending

    def take(self) -> tuple[tuple[str, ...], tuple[CommandResult, ...]]:
        """The acknowledgements and results not reported yet (then forgotten)."""
        taken = (tuple(self._acks), tuple(self._results))
        self._acks, self._results = [], []
        return taken

    def reset(self) -> None:
        """Forget what was queued but not run (the session ended; a replay re-queues it)."""
        self._queue = asyncio.Queue()
        self._queued.clear()
        self.outputs.close()  # their readers were on the coordinator that went away

    async def run(self) -> None:
        """Run queued commands until cancelled; checks under way are cancelled with it."""
        checks: set[asyncio.Task[None]] = set()
        try:
            while True:
                command_id, command = await self._queue.get()
                if isinstance(command, ReadLogs | ExecStream | CancelOutput):
                    self._output(command_id, command)
                elif isinstance(command, RunCheck):
                    task = asyncio.create_task(self._run(command_id, command))
                    checks.add(task)
                    task.add_done_callback(checks.discard)
                else:
                    await self._run(command_id, command)
        finally:
            for task in checks:
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)

    def _output(self, command_id: str, command: ReadLogs | ExecStream | CancelOutput) -> None:
        if isinstance(command, CancelOutput):
            self.outputs.cancel(command.command_id)
        else:
            self.outputs.start(command_id, command)
        self._finish(command_id, CommandResult(command_id, ok=True))

    async def _run(self, command_id: str, command: AgentCommand) -> None:
        try:
            output = await self.endpoint.execute(command)
            result = (CommandResult(command_id, ok=True) if output is None
                      else replace(output, command_id=command_id))
        except Exception as exc:  # reported to the coordinator, not fatal to the stream
            log.warning("command %s failed: %s", command_id, exc)
            result = CommandResult(command_id, ok=False, error=str(exc))
        self._finish(command_id, result)

    def _finish(self, command_id: str, result: CommandResult) -> None:
        self._queued.discard(command_id)
        self.commands_run += 1
        self._acks.append(command_id)
        self._results.append(result)
        self.done.set()
