"""What the coordinator stream needs from the agent (``AgentEndpoint``), so the session runs
over the real agent (``agent.stream.adapter.StreamAdapter``) or over a fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from agent.runtime.protocol import OutputPiece
from common.stream_commands import AgentCommand, ExecStream, ReadLogs
from common.stream_messages import (
    CommandResult,
    MetricsWindow,
    ObservedInstance,
    Registration,
    ReportedEvent,
)

__all__ = ["AgentEndpoint", "ChangeBatch"]


@dataclass
class ChangeBatch:
    """What changed since the previous batch."""

    changed: list[ObservedInstance] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    events: list[ReportedEvent] = field(default_factory=list)
    windows: list[MetricsWindow] = field(default_factory=list)
    host_usage: Mapping[str, float] = field(default_factory=dict)
    wake_units: list[tuple[str, str]] = field(default_factory=list)
    """Collected units a request reached here: the coordinator wakes them."""

    @property
    def empty(self) -> bool:
        return not (self.changed or self.removed or self.events or self.windows
                    or self.wake_units)


class AgentEndpoint(Protocol):
    """The agent as the stream sees it: who it is and runs, what changed, and one handler
    for commands."""

    def registration(self) -> Registration:
        """Who this host is and every instance it runs now (sent after every connect)."""
        ...

    async def next_changes(self, timeout: float) -> ChangeBatch:
        """Changes since the last call; waits up to ``timeout`` for the first one.

        Cancelling the wait must lose nothing (changes stay for the next call)."""
        ...

    async def execute(self, command: AgentCommand) -> CommandResult | None:
        """Carry out one command (idempotent); raise to report a failure. RunCheck returns
        what its command did (the stream fills in the command id)."""
        ...

    def output(self, command: ReadLogs | ExecStream) -> AsyncIterator[OutputPiece]:
        """An instance's logs or a command's output as it comes (ending with an ``end``
        piece); raises NotFound/FailedPrecondition for an instance it cannot read."""
        ...
