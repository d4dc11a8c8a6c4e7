"""A leak that fills its limit faster than the long leak window is caught before the OOM killer.

Scaled from the plan's case (120 MB/min under 256 MiB, sampled every 5 s: the limit is about
24 sampling periods away) to the same ratio: 84 MiB/min under 64 MiB sampled every 1.5 s
(the demo app allocates once a second, so 1.5 s periods always see growth). The full-size
run is bench/fast_leak.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import docker
from agent_fixtures import AgentHarness, make_spec, wait_event

from agent.instances.events import EventType
from agent.instances.spec import ResourceSpec
from common.lifecycle import InstanceState

MIB = 1024 * 1024


def _oom(details: dict[str, object]) -> bool:
    return bool(details.get("oom_killed")) or details.get("action") == "oom_killed"


async def test_fast_leak_is_dumped_and_restarted_before_any_oom_kill(
    harness: AgentHarness, docker_client: docker.DockerClient
) -> None:
    started = time.time()
    agent = await harness.agent(run_loops=True, monitor_interval=1.5, stop_grace=5.0)
    spec = make_spec(
        "fastleak-1",
        env={"LEAK_MB_PER_MIN": "84"},
        resources=ResourceSpec(cpu=1.0, memory=64 * MIB),
    )
    view = await agent.start_instance(spec)
    leak = await wait_event(agent, EventType.MEMORY_LEAK, timeout=90)
    print(f"leak after {leak.time - started:.1f} s: {leak.details['reason']}")
    assert 0 < leak.details["projected_s"] <= 6 * 1.5, leak.details
    assert "of the limit (high-water mark 85%)" in leak.details["reason"]
    dump = await wait_event(agent, EventType.MEMORY_DUMP)
    assert (Path(dump.details["path"]) / "memory.json").exists()
    success = await wait_event(
        agent, EventType.RECOVERY_SUCCESS, lambda e: e.details["kind"] == "memory_leak", timeout=60
    )
    assert success.details["generation"] == 2
    after = agent.instance("fastleak-1")
    assert after.state == InstanceState.RUNNING and after.container_id != view.container_id

    # no OOM kill before the leak event: none reported by the agent, none seen by Docker
    events = agent.bus.recent()
    first_leak = events.index(leak)
    assert not [e for e in events[:first_leak] if _oom(dict(e.details))]
    assert not [e for e in agent.bus.recent(EventType.CRASHED)
                if e.details.get("generation") == 1]
    ooms = docker_client.events(
        since=int(started), until=int(time.time()) + 1, decode=True,
        filters={"event": "oom", "label": "landlord.instance=fastleak-1"},
    )
    assert list(ooms) == []
