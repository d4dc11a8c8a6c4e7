"""Commands run in containers on request, answered through the host's next report.

``run_check(instance_id, argv, timeout_s)`` sends RunCheck to the instance's host and waits
for its CommandResult (exit code, output), which ``deliver(results)`` hands over when the
host's report brings it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Any

from common.errors import NotFound, Unavailable
from common.stream_commands import Command, RunCheck
from common.stream_messages import CommandResult
from coordinator.fleet.sessions import Fleet
from coordinator.state.cluster_state import ClusterState

__all__ = ["DEFAULT_ANSWER_MARGIN", "CheckCalls"]

DEFAULT_ANSWER_MARGIN = 10.0
"""How long past a RunCheck's own timeout its host's answer is waited for (seconds)."""


class CheckCalls:
    def __init__(self, state: ClusterState, fleet: Fleet,
                 answer_margin_s: float = DEFAULT_ANSWER_MARGIN) -> None:
        self._state = state
        self._fleet = fleet
        self._answer_margin_s = answer_margin_s
        self._awaited: dict[str, asyncio.Future[CommandResult]] = {}
        """RunCheck command id -> its result, once the host reports it."""

    @property
    def awaited(self) -> int:
        """Checks waiting for their host's answer."""
        return len(self._awaited)

    async def run_check(self, instance_id: str, argv: Sequence[str],
                        timeout_s: float) -> CommandResult:
        """Run ``argv`` in the instance's container (its host's agent runs ``docker exec``)
        and return the host's result: ``ok`` with the exit code and output, or not ok with
        why (timed out, not running there, an agent that has no RunCheck).

        Raises NotFound for an unknown instance and Unavailable when its host is not
        connected, disconnects, or does not answer within ``timeout_s`` plus a margin."""
        found = self._state.instances.get(instance_id)
        if found is None:
            raise NotFound(f"instance {instance_id} does not exist", instance=instance_id)
        host_id = found.value.host_id
        session = self._fleet.session_for(host_id, instance_id)
        command_id = f"check:{secrets.token_hex(8)}"
        answer: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._awaited[command_id] = answer
        closed = asyncio.ensure_future(session.closed.wait())
        try:
            session.send(Command(command_id, RunCheck(instance_id, tuple(argv),
                                                              timeout_s)))
            self._fleet.commands_sent += 1
            limit = timeout_s + self._answer_margin_s
            waiters: set[asyncio.Future[Any]] = {answer, closed}
            done, _ = await asyncio.wait(waiters, timeout=limit,
                                         return_when=asyncio.FIRST_COMPLETED)
            if answer in done:
                return answer.result()
            if closed in done:
                raise Unavailable(f"host {host_id} disconnected before answering the check "
                                  f"of {instance_id}", host=host_id, instance=instance_id)
            raise Unavailable(f"host {host_id} did not answer the check of {instance_id} "
                              f"within {limit:g}s", host=host_id, instance=instance_id)
        finally:
            closed.cancel()
            self._awaited.pop(command_id, None)

    def deliver(self, results: Sequence[CommandResult]) -> None:
        """Hand the results of awaited commands (RunCheck) to whoever waits for them."""
        for result in results:
            answer = self._awaited.get(result.command_id)
            if answer is not None and not answer.done():
                answer.set_result(result)
