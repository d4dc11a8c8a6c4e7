"""What the coordinator does while it leads, started on election and cancelled on step-down.

On taking over it waits until its cache has caught up with etcd (at least to its own
election), then carries on from etcd: every known host that is not lost gets a heartbeat
interval plus the grace period to reconnect before it can be lost, so a leader change never
moves instances by itself. Then loops run until the lead is lost: liveness and healing,
route sending (debounced), status writing (batched across reports), event trimming.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from coordinator.agents import STATUS_FLUSH, AgentSessions
from coordinator.control import FleetControl
from coordinator.errors import NotLeader
from coordinator.healing import Healer
from coordinator.liveness import HostHealth
from coordinator.store import Fence

if TYPE_CHECKING:
    from coordinator.rollouts.service import RolloutService

__all__ = ["LeaderDuties"]

log = logging.getLogger(__name__)


class LeaderDuties:
    def __init__(self, control: FleetControl, sessions: AgentSessions, healer: Healer,
                 tick: float = 1.0, route_flush: float = 0.2, trim_every: float = 10.0,
                 rollouts: RolloutService | None = None) -> None:
        self.control = control
        self.sessions = sessions
        self.healer = healer
        self.tick = tick
        self.route_flush = route_flush
        self.trim_every = trim_every
        self.rollouts = rollouts

    async def lead(self, fence: Fence) -> None:
        c = self.control
        await asyncio.wait_for(c.view.synced.wait(), timeout=30)
        await c.view.wait_for(fence.create_revision, timeout=30)
        c.fleet.close_all("leadership changed")
        c.fleet.reset()
        now = c.clock.monotonic()
        expected = [h for h, v in c.state.hosts.items() if v.value.status != "lost"]
        c.fleet.expect(expected, now)
        for host_id in expected:
            c.fleet.health[host_id] = HostHealth.SUSPECT
        c.leadership.take(fence)
        log.info("leading: %d host(s) expected to reconnect", len(expected))
        try:
            await c.events.emit("leader.elected", f"{c.leadership.me.id} leads",
                                coordinator=c.leadership.me.id)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._every(self.tick, self.healer.tick, "liveness"))
                group.create_task(self._every(self.route_flush, c.flush_routes, "routes"))
                group.create_task(self._every(STATUS_FLUSH, self.sessions.flush_statuses,
                                              "statuses"))
                group.create_task(self._every(self.trim_every, c.events.trim, "event trim"))
                if self.rollouts is not None:
                    # Resumes every rollout left active by a previous leader.
                    group.create_task(self.rollouts.lead(), name="rollouts")
        finally:
            c.leadership.release()
            c.fleet.close_all("this coordinator lost the lead")
            log.warning("no longer leading")

    async def _every(self, interval: float, action: Callable[[], Awaitable[object]],
                     name: str) -> None:
        while True:
            try:
                await action()
            except NotLeader:
                raise
            except Exception:  # one failed round must not end the leader's duties
                log.exception("%s round failed", name)
            await asyncio.sleep(interval)
