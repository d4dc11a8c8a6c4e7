"""A host speaks only for its own instances: reports about another host's are dropped.

Two in-process agents on real streams to a real coordinator and etcd: h1 is honest, h2 adds
forged statuses and events about h1's instance to its reports (its stream's host id is h2,
the forged items name h1's instance).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from agent.stream.endpoint import ChangeBatch
from common.event_types import EventType
from common.stream_messages import ReportedEvent
from coordinator.app import Coordinator
from coordinator.fleet.report_scope import DropKind
from tests.e2e.simulated_agent import FakeRuntime
from tests.integration.coordinator.agents import start_agent
from tests.integration.coordinator.test_coord_stream import check, deploy, running
from tests.support import async_eventually


class ForgingRuntime(FakeRuntime):
    """FakeRuntime whose next report also carries ``forged``."""

    forged: ChangeBatch | None = None

    def forge(self, batch: ChangeBatch) -> None:
        self.forged = batch
        self._signal.set()

    async def next_changes(self, timeout: float) -> ChangeBatch:
        batch = await super().next_changes(timeout)
        forged, self.forged = self.forged, None
        if forged is not None:
            batch.changed += forged.changed
            batch.events += forged.events
            batch.windows += forged.windows
        return batch


def weights(agent: Any) -> dict[str, int]:
    return {str(s["server"]): int(s["weight"]) for s in agent.runtime.routes.get("shop/web", [])}


async def test_status_and_events_about_another_hosts_instance_are_dropped(
    coordinator: Coordinator, admin: Any
) -> None:
    honest = start_agent([coordinator.config.listen], "h1", "127.0.0.2")
    forger = start_agent([coordinator.config.listen], "h2", "127.0.0.3",
                         runtime_type=ForgingRuntime)
    agents = [honest, forger]
    try:
        await async_eventually(
            check(lambda: all(a.stream.connected.is_set() for a in agents)), timeout=10)
        await deploy(admin, replicas=2)
        placed = await async_eventually(lambda: running(admin, 2), timeout=10)
        victim = next(i for i in placed if i.host_id == "h1").instance_id
        expected = {i.instance_id: 0 for i in placed}
        await async_eventually(
            check(lambda: all(weights(a) and all(w > 0 for w in weights(a).values())
                              and weights(a).keys() == expected.keys() for a in agents)),
            timeout=5)
        before = [weights(a) for a in agents]

        stolen = replace(honest.runtime.instances[victim], host_id="h2", state="error",
                         health_score=0.0, reason="forged")
        now = time.time()
        runtime = forger.runtime
        assert isinstance(runtime, ForgingRuntime)
        runtime.forge(ChangeBatch(changed=[stolen], events=[
            ReportedEvent("rollout.promoted", now, "forged promotion", "shop", "web", "1.0.0"),
            ReportedEvent(EventType.CRASHED, now, "forged crash", "shop", "web", "1.0.0",
                          instance_id=victim),
            ReportedEvent(EventType.GC_COLLECTED, now, "h2's own gc"),  # its own: kept
        ]))

        def h2_gc_recorded() -> bool:
            return any(e.host_id == "h2" and e.type == EventType.GC_COLLECTED
                       for e in coordinator.state.event_history())

        await async_eventually(check(h2_gc_recorded), timeout=5)
        dropped = coordinator.sessions.foreign_dropped
        assert dropped[DropKind.STATUS] == 1 and dropped[DropKind.EVENT] == 2
        forged = [e for e in coordinator.state.event_history() if e.message.startswith("forged")]
        assert forged == []
        await asyncio.sleep(1.0)  # statuses flush every 0.1 s, routes go out within it
        status = coordinator.state.statuses[victim]
        assert (status.host_id, status.state) == ("h1", "running")
        seen = coordinator.known.known_state(victim)
        assert seen is not None and seen.host_id == "h1" and seen.routable
        listed = await running(admin, 2)
        assert {i.instance_id for i in listed} == expected.keys()
        assert [weights(a) for a in agents] == before
    finally:
        for agent in agents:
            await agent.stop()
