"""`landlord gc run` of every kind reaches a real agent and runs there.

The coordinator's CollectGarbage goes through its own conversion and FleetControl, over a real
gRPC stream, to an agent on real Docker. Each kind must be accepted (an "unused" the
agent did not know failed on every host before GC kinds were defined once), and
"unused" must remove the instance idle past its timeout."""

from __future__ import annotations

import asyncio

from agent_fixtures import AgentHarness, make_spec
from stand_in import connected, fleet_control

from agent.instances.events import EventType
from agent.instances.spec import HealthSpec
from common.gc_kinds import GcKind
from common.stream_commands import CollectGarbage
from tests.support import async_eventually


async def test_every_gc_kind_sent_by_the_coordinator_runs_on_the_agent(
        harness: AgentHarness) -> None:
    agent = await harness.agent()
    agent.set_stable_version("test", "demo", "1.0.0")
    idle = make_spec("gc-unused-1", version="1.1.0", image="landlord/demo-app:1.1.0",
                     idle_timeout=1.0, health=HealthSpec(interval_s=60.0))  # a probe is activity
    assert (await agent.start_instance(idle)).state == "running"
    await asyncio.sleep(1.5)  # idle past its timeout
    control = fleet_control()
    async with connected(agent, control) as coordinator:
        heard = coordinator.heard
        host_id = agent.config.host_id
        for kind in GcKind:
            assert control.fleet.broadcast([host_id], CollectGarbage((kind,))) == 1

        async def answered() -> bool:
            return len(heard.results) == len(GcKind)

        await async_eventually(answered, timeout=30, interval=0.1)
        assert [(r.ok, r.error) for r in heard.results] == [(True, "")] * len(GcKind)

        async def collected() -> bool:
            return idle.instance_id in heard.removed

        await async_eventually(collected, timeout=30, interval=0.1)
        assert any(e.type == EventType.GC_COLLECTED and e.instance_id == idle.instance_id
                   for e in heard.events)
        assert [e for e in heard.events if e.type == EventType.GC_FAILED] == []
