"""What the coordinator does while it leads, started on election and cancelled on step-down.

On taking over it waits until its cache has caught up with etcd (at least to its own
election), refuses a cluster whose records are of a newer schema, migrates older records
once (coordinator/state/schema_upgrade.py), then carries on from etcd: every known host
that is not lost gets a heartbeat interval plus the grace period to reconnect before it can
be lost, so a leader change never moves instances by itself. Then loops run until the lead
is lost: liveness and healing, forgetting hosts lost for long, host drains, escalated
instances (re-placed once), route sending
(debounced), status writing (batched across reports), event trimming, idle units.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from common.clock import Clock
from common.errors import LandlordError
from coordinator.errors import NotLeader
from coordinator.fleet.sessions import Fleet
from coordinator.fleet.status_writer import STATUS_FLUSH
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.leadership import Leadership
from coordinator.state.records import HostHealth
from coordinator.state.schema_upgrade import SchemaTooNew, SchemaUpgrade
from coordinator.state.store import Fence
from coordinator.state.view import ClusterView

if TYPE_CHECKING:
    from coordinator.rollouts.service import RolloutService

__all__ = ["LeaderDuties"]

log = logging.getLogger(__name__)


Round = Callable[[], Awaitable[object]]


class LeaderDuties:
    def __init__(self, *, view: ClusterView, state: ClusterState, fleet: Fleet,
                 leadership: Leadership, events: EventLog, clock: Clock, heal: Round,
                 flush_routes: Round, flush_statuses: Round, tick: float = 1.0,
                 route_flush: float = 0.2, trim_every: float = 10.0,
                 rollouts: RolloutService | None = None,
                 schema: SchemaUpgrade | None = None,
                 forget_hosts: Round | None = None, forget_every: float = 1.0,
                 drain_hosts: Round | None = None,
                 escalations: Round | None = None,
                 rebalance_units: Round | None = None, collect_idle: Round | None = None,
                 idle_every: float = 30.0) -> None:
        self._view = view
        self._state = state
        self._fleet = fleet
        self._leadership = leadership
        self._events = events
        self._clock = clock
        self._heal = heal
        self._flush_routes = flush_routes
        self._flush_statuses = flush_statuses
        self.tick = tick
        self.route_flush = route_flush
        self.trim_every = trim_every
        self.rollouts = rollouts
        self.schema = schema
        self.forget_hosts = forget_hosts
        self.forget_every = forget_every
        self.drain_hosts = drain_hosts
        """Steps every host drain (coordinator/fleet/drains.py), resumed from etcd."""
        self.escalations = escalations
        """Re-places escalated instances once (coordinator/fleet/escalations.py)."""
        self.rebalance_units = rebalance_units
        """Steps every unit rebalance and starts the automatic ones
        (coordinator/fleet/rebalances.py)."""
        self.collect_idle = collect_idle
        """Collects idle units (coordinator/fleet/idle_units.py)."""
        self.idle_every = idle_every

    async def lead(self, fence: Fence) -> None:
        fleet, leadership = self._fleet, self._leadership
        await asyncio.wait_for(self._view.synced.wait(), timeout=30)
        await self._view.wait_for(fence.create_revision, timeout=30)
        if self.schema is not None:
            try:
                self.schema.check()  # a cluster of a newer release is not ours to lead
            except SchemaTooNew as exc:
                log.error("%s", exc)
                return  # the election steps down; it will not campaign again meanwhile
        fleet.close_all("leadership changed")
        fleet.reset()
        now = self._clock.monotonic()
        expected = [h for h, v in self._state.hosts.items() if v.value.status != HostHealth.LOST]
        fleet.expect(expected, now)
        for host_id in expected:
            fleet.health[host_id] = HostHealth.SUSPECT
        leadership.take(fence)
        log.info("leading: %d host(s) expected to reconnect", len(expected))
        try:
            async with asyncio.TaskGroup() as group:
                # routes first: the hosts re-registering now need them (a takeover's route
                # plan must not wait for the record migration and the election event)
                group.create_task(self._every(self.route_flush, self._flush_routes, "routes"))
                group.create_task(self._every(STATUS_FLUSH, self._flush_statuses, "statuses"))
                await self._migrate_records()
                await self._events.emit("leader.elected", f"{leadership.me.id} leads",
                                        coordinator=leadership.me.id)
                group.create_task(self._every(self.tick, self._heal, "liveness"))
                group.create_task(self._every(self.trim_every, self._events.trim, "event trim"))
                if self.forget_hosts is not None:
                    group.create_task(self._every(self.forget_every, self.forget_hosts,
                                                  "host forgetting"))
                if self.drain_hosts is not None:
                    group.create_task(self._every(self.tick, self.drain_hosts, "host drains"))
                if self.escalations is not None:
                    group.create_task(self._every(self.tick, self.escalations, "escalations"))
                if self.rebalance_units is not None:
                    group.create_task(self._every(self.tick, self.rebalance_units,
                                                  "unit rebalances"))
                if self.collect_idle is not None:
                    group.create_task(self._every(self.idle_every, self.collect_idle,
                                                  "idle units"))
                if self.rollouts is not None:
                    # Resumes every rollout left active by a previous leader.
                    group.create_task(self.rollouts.lead(), name="rollouts")
        finally:
            leadership.release()
            fleet.close_all("this coordinator lost the lead")
            log.warning("no longer leading")

    async def _migrate_records(self) -> None:
        """Write back the records older than this release's schema, once. Failing is not
        fatal: records read migrated anyway, and the next take-over tries again."""
        if self.schema is None:
            return
        try:
            await self.schema.run()
        except (NotLeader, SchemaTooNew):
            raise
        except LandlordError as exc:
            log.warning("record migration not finished (%s); records are read migrated "
                        "meanwhile, the next leader tries again", exc)

    async def _every(self, interval: float, action: Round, name: str) -> None:
        while True:
            try:
                await action()
            except NotLeader:
                raise
            except Exception:  # one failed round must not end the leader's duties
                log.exception("%s round failed", name)
            await asyncio.sleep(interval)
