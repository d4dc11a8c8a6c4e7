"""Who leads: this coordinator's fence while it leads, and the known leader's address."""

from __future__ import annotations

import asyncio
import contextlib

from coordinator.errors import NotLeader
from coordinator.state.cluster_state import ClusterState
from coordinator.state.records import LeaderRecord
from coordinator.state.store import Fence

__all__ = ["Leadership"]


class Leadership:
    def __init__(self, me: LeaderRecord, state: ClusterState) -> None:
        self.me = me
        self._state = state
        self._fence: Fence | None = None
        self._change = asyncio.Event()
        state.leader_watchers.append(self._changed)

    def take(self, fence: Fence) -> None:
        self._fence = fence
        self._changed()

    def release(self) -> None:
        self._fence = None
        self._changed()

    def _changed(self) -> None:
        """Wake every call waiting for a leader (each waits on the event of its time)."""
        self._change.set()
        self._change = asyncio.Event()

    async def until_led(self, unreachable: str, timeout: float) -> None:
        """Until this coordinator leads or knows a leader other than ``unreachable`` (the
        address an agent could not reach: a dead leader whose lease has not run out), or
        ``timeout`` seconds passed. An agent's Register waits here instead of being sent
        back and forth between followers and a dead leader."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.is_leader:
            leader = self.leader
            if leader is not None and leader.address != unreachable:
                return
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._change.wait()

    @property
    def is_leader(self) -> bool:
        return self._fence is not None

    @property
    def fence(self) -> Fence:
        """The fence for a write; raises NotLeader (naming the leader) when not leading."""
        if self._fence is None:
            leader = self.leader
            where = f"; the leader is {leader.address}" if leader else "; no leader is elected"
            raise NotLeader(
                f"coordinator {self.me.id} does not lead{where}",
                leader_address=leader.address if leader else "",
            )
        return self._fence

    @property
    def leader(self) -> LeaderRecord | None:
        if self._fence is not None:
            return self.me
        found = self._state.leader
        if found is None or found.value.id == self.me.id:
            return None  # our own stale key: we are not leading any more
        return found.value
