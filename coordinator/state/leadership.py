"""Who leads: this coordinator's fence while it leads, and the known leader's address."""

from __future__ import annotations

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

    def take(self, fence: Fence) -> None:
        self._fence = fence

    def release(self) -> None:
        self._fence = None

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
