"""Forgetting lost hosts in action: their records leave etcd (a leader duty).

Each round decides (coordinator/fleet/forgetting.py) which lost hosts are past
``forget_host_after`` with nothing placed on them, then removes each one in one fenced
transaction: its host record and allocation ledger (both only as last read, so a host that
registers again or a placement on it wins), its liveness key, the status records left of
instances that no longer exist, and a ``host.forgotten`` event, all together or not at all.
A host kept because instances are still on it is logged once per leadership term, not every
round. At most ``per_round`` hosts are removed per round, so thousands of stale hosts leave
etcd at a steady pace instead of in one burst.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Protocol

from common.clock import Clock
from common.errors import Conflict, Unavailable
from common.event_types import EventType
from coordinator.fleet.forgetting import ForgetAction, ForgetDecision, LostHost, plan_forgetting
from coordinator.fleet.host_records import HostRecords
from coordinator.fleet.sessions import Fleet
from coordinator.state.cluster_state import ClusterState
from coordinator.state.records import EventRecord
from coordinator.state.store import Txn

__all__ = ["HostForgetter"]

log = logging.getLogger(__name__)

PER_ROUND = 64
"""Most hosts removed in one round."""


class EventStaging(Protocol):
    """Events written inside another transaction (coordinator/state/events.py)."""

    def make(self, type_: str, message: str = "", **fields: str) -> EventRecord: ...

    def staged(self, events: list[EventRecord]) -> Txn: ...


class HostForgetter:
    def __init__(self, *, hosts: HostRecords, state: ClusterState, fleet: Fleet,
                 events: EventStaging, clock: Clock, forget_after: float,
                 per_round: int = PER_ROUND) -> None:
        self._hosts = hosts
        self._state = state
        self._fleet = fleet
        self._events = events
        self._clock = clock
        self.forget_after = forget_after
        self.per_round = per_round
        self._kept: set[str] = set()
        """Hosts whose keeping was logged this term (logged once, not every round)."""
        self.forgotten = 0

    async def tick(self) -> int:
        """One round; returns how many hosts were forgotten."""
        state = self._state
        lost = []
        for host_id in state.lost_host_ids():
            found = state.hosts.get(host_id)
            if found is not None:
                placed = state.instances_on(host_id)
                lost.append(LostHost(host_id, found.value.status_changed_at, len(placed),
                                     host_id in self._fleet.sessions,
                                     sum(r.paused for r in placed)))
        decisions = plan_forgetting(lost, self._clock.now(), self.forget_after)
        self._kept &= {d.host_id for d in decisions if d.action == ForgetAction.KEEP}
        orphans: dict[str, list[str]] | None = None
        done = 0
        for decision in decisions:
            found = state.hosts.get(decision.host_id)
            if found is None:
                continue
            if decision.action == ForgetAction.KEEP:
                self._keep(decision)
            elif decision.action == ForgetAction.STAMP:
                if await self._hosts.stamp_lost(found):
                    log.info("lost host %s had no lost time; its wait of %.0fs before it is "
                             "forgotten starts now", decision.host_id, self.forget_after)
            elif done < self.per_round:
                if orphans is None:
                    orphans = self._orphan_statuses()
                if await self._forget(decision, orphans.get(decision.host_id, [])):
                    done += 1
        self.forgotten += done
        return done

    def _keep(self, decision: ForgetDecision) -> None:
        if decision.host_id in self._kept:
            return
        self._kept.add(decision.host_id)
        log.warning("host %s has been lost for %.0fs (forget_host_after %.0fs) but is kept: "
                    "%s", decision.host_id, decision.lost_for, self.forget_after,
                    decision.reason)

    def _orphan_statuses(self) -> dict[str, list[str]]:
        """host id -> status records of instances that no longer exist, reported by it."""
        found: dict[str, list[str]] = defaultdict(list)
        for iid, status in self._state.statuses.items():
            if iid not in self._state.instances:
                found[status.host_id].append(iid)
        return found

    async def _forget(self, decision: ForgetDecision, statuses: list[str]) -> bool:
        host_id = decision.host_id
        found = self._state.hosts[host_id]
        building = found.value.building
        event = self._events.make(
            EventType.HOST_FORGOTTEN.value,
            f"{host_id} forgotten: {decision.reason}; its records were removed from etcd",
            host_id=host_id, building=building, lost_for=f"{decision.lost_for:.0f}")
        try:
            await self._hosts.forget(found, statuses, self._events.staged([event]))
        except (Conflict, Unavailable) as exc:
            log.warning("could not forget host %s yet (next round tries again): %s",
                        host_id, exc)
            return False
        if host_id not in self._fleet.sessions:  # not registering again meanwhile
            self._fleet.forget_host(host_id)
        self._kept.discard(host_id)
        log.info("host %s (building %s) forgotten: %s; %d status record(s) removed with it",
                 host_id, building, decision.reason, len(statuses))
        return True
