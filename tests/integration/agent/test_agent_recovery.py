"""Crash and leak recovery on real Docker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from agent_fixtures import AgentHarness, http_get, make_spec, wait_event

from agent.instances.events import EventType
from agent.instances.resource_monitor import main_process_pid
from agent.instances.spec import HealthSpec, ResourceSpec, StateMode
from agent.service import AgentService
from common.lifecycle import InstanceState

MIB = 1024 * 1024


async def eventually_spare(agent: AgentService, instance_id: str, generation: int) -> str:
    """The id of the instance's spare container of ``generation``, once made."""
    for _ in range(200):
        spare = agent.supervisor.spares.get(instance_id)
        if spare is not None and spare.generation == generation:
            return spare.container_id
        await asyncio.sleep(0.05)
    raise AssertionError(f"no spare of generation {generation} for {instance_id}")


def _count(port: int) -> int:
    status, body = http_get(port, "/")
    assert status == 200
    return int(json.loads(body)["count"])


async def test_killed_instance_is_replaced_with_its_state_intact(harness: AgentHarness) -> None:
    agent = await harness.agent(spare_containers=True)
    spec = make_spec("state-1", state_mode=StateMode.SNAPSHOT)
    view = await agent.start_instance(spec)
    assert [_count(spec.port) for _ in range(3)] == [1, 2, 3]
    old = view.container_id
    # its replacement is created (not started) ahead of a crash
    spare = await eventually_spare(agent, "state-1", 2)
    assert (await agent.runtime.inspect(spare)).status == "created"
    info = await agent.runtime.inspect(old or "")
    os.kill(main_process_pid(info.pid), signal.SIGKILL)  # the app, under docker-init

    success = await wait_event(agent, EventType.RECOVERY_SUCCESS)
    assert success.details["kind"] == "container_crash"
    switch = await wait_event(agent, EventType.TRAFFIC_SWITCH)
    assert switch.details["old_container"] == old
    assert switch.details["new_container"] == spare  # started, not created, on the crash
    assert switch.details["port"] == spec.port
    after = agent.instance("state-1")
    assert after.state == InstanceState.RUNNING and after.generation == 2
    assert _count(spec.port) == 4  # the counter survived in the carried-over state dir

    dump = await wait_event(agent, EventType.CRASH_DUMP)
    directory = Path(dump.details["path"])
    summary = json.loads((directory / "crash.json").read_text())
    assert summary["exit_code"] == 137 and summary["oom_killed"] is False
    assert "inspect.json" in os.listdir(directory) and (directory / "logs.txt").exists()
    history = [
        (t.from_state, t.to_state) for t in agent.records.get("state-1").lifecycle.history
    ]
    assert ("running", "error") in history and ("error", "initializing") in history
    # the next spare is made; stopping the instance removes it with the rest
    await eventually_spare(agent, "state-1", 3)
    await agent.stop_instance("state-1", grace=1)
    assert not await agent.runtime.list_containers(
        {"landlord.host": agent.config.host_id, "landlord.instance": "state-1"})


async def test_crash_loop_stops_at_the_retry_limit_and_escalates(harness: AgentHarness) -> None:
    agent = await harness.agent(crash_max_retries=2, crash_delay=0.1)
    # crashes 0.5 s after start, before its 2 s warm-up ends: it never becomes ready
    spec = make_spec(
        "loop-1", env={"CRASH_AFTER_S": "0.5"}, health=HealthSpec(interval_s=0.5, warmup=2.0)
    )
    await agent.start_instance(spec, wait=False)
    escalated = await wait_event(agent, EventType.ESCALATION, timeout=60)
    assert "max retries 2" in escalated.details["reason"]
    record = agent.records.get("loop-1")
    assert record.lifecycle.state is InstanceState.ERROR
    assert record.generation == 1 + 1 + 2  # the original, the first try, two retries
    attempts = agent.bus.recent(EventType.RECOVERY_ATTEMPT)
    assert [e.details["attempt"] for e in attempts] == [1, 2, 3]
    assert [e.details["delay"] for e in attempts] == [0.0, 0.1, 0.2]
    final = [e for e in agent.bus.recent(EventType.RECOVERY_FAILURE) if e.details["final"]]
    assert len(final) == 1 and "escalated" in record.lifecycle.metadata
    assert not agent.bus.recent(EventType.RECOVERY_SUCCESS)


async def test_leaking_instance_is_detected_dumped_and_restarted(harness: AgentHarness) -> None:
    agent = await harness.agent(
        run_loops=True, monitor_interval=1.5, leak_window=6.0, leak_min_samples=4
    )
    spec = make_spec(
        "leak-1", env={"LEAK_MB_PER_MIN": "600"}, resources=ResourceSpec(cpu=1.0, memory=512 * MIB)
    )
    view = await agent.start_instance(spec)
    leak = await wait_event(agent, EventType.MEMORY_LEAK, timeout=60)
    assert leak.details["slope_bytes_per_s"] > 1 * MIB
    dump = await wait_event(agent, EventType.MEMORY_DUMP)
    directory = Path(dump.details["path"])
    files = set(os.listdir(directory))
    assert {"proc-smaps_rollup", "proc-status", "cgroup-memory.stat", "memory.json"} <= files
    assert "Rss:" in (directory / "proc-smaps_rollup").read_text()
    assert "python3" in (directory / "proc-cmdline").read_text()
    success = await wait_event(
        agent, EventType.RECOVERY_SUCCESS, lambda e: e.details["kind"] == "memory_leak", timeout=60
    )
    assert success.details["generation"] == 2
    after = agent.instance("leak-1")
    assert after.state == InstanceState.RUNNING and after.container_id != view.container_id
    history = [
        (t.from_state, t.to_state) for t in agent.records.get("leak-1").lifecycle.history
    ]
    assert ("running", "stopping") in history and ("stopped", "initializing") in history
    assert not await agent.runtime.list_containers(
        {"landlord.instance": "leak-1", "landlord.generation": "1"}
    )
