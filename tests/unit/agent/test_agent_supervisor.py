"""Supervision, recovery, eviction, GC and adoption on a recording fake runtime."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.instances.container_config import LABEL_INSTANCE
from agent.instances.events import EventType
from agent.instances.spec import HealthSpec, InstanceSpec, StateMode
from agent.runtime.protocol import ExecResult
from agent.service import AgentService
from common.clock import Clock, FakeClock, SystemClock
from common.errors import Conflict, NotFound
from common.lifecycle import InstanceState
from common.recovery import LeakAssessment
from tests.support import async_eventually
from tests.unit.agent.fake_runtime import RecordingRuntime

S = InstanceState


@dataclass
class Rig:
    service: AgentService
    runtime: RecordingRuntime
    healthy: set[int] = field(default_factory=set)

    def types(self, instance: str | None = None) -> list[str]:
        return [
            e.type for e in self.service.bus.recent() if instance is None or e.instance == instance
        ]

    async def wait(self, event_type: str) -> None:
        async def seen() -> bool:
            return bool(self.service.bus.recent(event_type))

        await async_eventually(seen, timeout=5, interval=0.01)


def config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "host_id": "h1",
        "advertise_address": "127.0.0.2",
        "data_dir": tmp_path,
        "bandwidth": False,
        "startup_probe_interval": 0.01,
        "crash_delay": 0.01,
        "loop_backoff": 0.01,
        "stop_grace": 1.0,
        "crash_max_retries": 1,
    }
    values.update(overrides)
    return AgentConfig(**values)


async def make_rig(
    tmp_path: Path,
    runtime: RecordingRuntime | None = None,
    clock: Clock | None = None,
    **overrides: Any,
) -> Rig:
    runtime = runtime or RecordingRuntime()
    healthy: set[int] = set()

    async def probe(address: str, port: int, path: str, timeout: float) -> bool:
        return port in healthy

    service = AgentService(
        config(tmp_path, **overrides), runtime, clock or SystemClock(), prober=probe
    )
    await service.open()
    return Rig(service, runtime, healthy)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await make_rig(tmp_path)
    yield rig
    await rig.service.close()


def spec(instance_id: str = "i1", port: int = 20001, **overrides: Any) -> InstanceSpec:
    values: dict[str, Any] = {
        "apartment": "a",
        "unit": "u",
        "version": "1.0.0",
        "slot": "blue",
        "instance_id": instance_id,
        "image": "img:1",
        "port": port,
        "health": HealthSpec(interval_s=0.01, timeout_s=0.1, retries=2, startup_timeout=0.3),
    }
    values.update(overrides)
    return InstanceSpec(**values)


async def test_start_drives_the_lifecycle_to_running_and_persists(rig: Rig) -> None:
    rig.healthy.add(20001)
    view = await rig.service.start_instance(spec())
    assert view.state == "running" and view.generation == 1 and view.health_score == 1.0
    moves = [(e.details["from"], e.details["to"]) for e in rig.service.bus.recent(EventType.STATE)]
    assert moves == [("created", "initializing"), ("initializing", "ready"), ("ready", "running")]
    [request] = rig.runtime.by_call("create")
    assert request.labels[LABEL_INSTANCE] == "i1" and request.env["BIND"] == "0.0.0.0"
    assert request.published == {20001: ("127.0.0.2", 20001)}  # bridged by default
    saved = json.loads((rig.service.store.directory / "i1.json").read_text())
    assert saved["lifecycle"]["state"] == "running" and saved["container_id"] == view.container_id
    with pytest.raises(Conflict):
        await rig.service.start_instance(spec())
    with pytest.raises(Conflict, match="port 20001"):
        await rig.service.start_instance(spec("i2"))


async def test_the_instance_user_is_chosen_and_owns_its_state_dir(
        rig: Rig, tmp_path: Path) -> None:
    rig.healthy.update({20001, 20002, 20003})
    rig.runtime.image_users["named:1"] = "app"
    rig.runtime.files["/etc/passwd"] = b"root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/:/x\n"
    await rig.service.start_instance(spec(state_mode=StateMode.SNAPSHOT))
    await rig.service.start_instance(spec("i2", 20002, image="named:1",
                                          state_mode=StateMode.SNAPSHOT))
    await rig.service.start_instance(spec("i3", 20003, run_as_root=True,
                                          state_mode=StateMode.SNAPSHOT))
    users = [request.user for request in rig.runtime.by_call("create")
             if request.name.endswith("-g1")]  # not the spares (-g2)
    assert users == ["65532:65532", "app", "0:0"]
    owners = [(d.stat().st_uid, d.stat().st_gid, d.stat().st_mode & 0o777)
              for d in (tmp_path / "state" / "a" / "u" / i for i in ("i1", "i2", "i3"))]
    assert owners == [(65532, 65532, 0o700), (1001, 1002, 0o700), (0, 0, 0o700)]


async def test_crash_is_dumped_replaced_and_traffic_switched(rig: Rig, tmp_path: Path) -> None:
    rig.healthy.add(20001)
    view = await rig.service.start_instance(spec(state_mode=StateMode.SNAPSHOT))
    rig.runtime.crash(view.container_id or "", exit_code=137, oom=True)
    await rig.wait(EventType.RECOVERY_SUCCESS)
    after = rig.service.instance("i1")
    assert after.state == "running" and after.generation == 2 and after.restarts == 1
    switch = rig.service.bus.recent(EventType.TRAFFIC_SWITCH)[0]
    assert switch.details["old_container"] == view.container_id
    assert switch.details["new_container"] == after.container_id
    await rig.wait(EventType.CRASH_DUMP)
    dump = Path(rig.service.bus.recent(EventType.CRASH_DUMP)[0].details["path"])
    assert json.loads((dump / "crash.json").read_text())["oom_killed"] is True
    assert "log of" in (dump / "logs.txt").read_text()
    memory = [e for e in rig.service.bus.recent(EventType.LIMIT_EXCEEDED)]
    assert memory[0].details["resource"] == "memory"
    # both generations bind-mount the same host state directory
    mounts = [r.mounts[0].source for r in rig.runtime.by_call("create")]
    assert mounts[0] == mounts[1] == str(tmp_path / "state" / "a" / "u" / "i1")
    # the crashed container is removed once the dump is written and the replacement runs
    async def removed() -> bool:
        return view.container_id not in rig.runtime.containers

    await async_eventually(removed, timeout=10)


async def test_never_ready_instance_is_retried_then_escalated(rig: Rig) -> None:
    await rig.service.start_instance(spec(), wait=False)  # never healthy
    await rig.wait(EventType.ESCALATION)
    record = rig.service.records.get("i1")
    assert record.lifecycle.state is S.ERROR and record.generation == 3
    attempts = [e.details["attempt"] for e in rig.service.bus.recent(EventType.RECOVERY_ATTEMPT)]
    assert attempts == [1, 2]
    assert "max retries 1" in record.lifecycle.metadata["escalated"]
    assert [e.details["final"] for e in rig.service.bus.recent(EventType.RECOVERY_FAILURE)] == [
        False,
        True,
    ]


async def test_unhealthy_running_instance_is_killed_and_replaced(rig: Rig) -> None:
    rig.healthy.add(20001)
    view = await rig.service.start_instance(spec())
    rig.healthy.clear()
    await rig.wait(EventType.CRASHED)
    crashed = rig.service.bus.recent(EventType.CRASHED)[0]
    assert "unhealthy: 2 failed" in crashed.details["reason"]
    assert ("kill", (view.container_id, "SIGKILL")) in rig.runtime.calls
    rig.healthy.add(20001)
    await rig.wait(EventType.RECOVERY_SUCCESS)
    assert rig.service.instance("i1").generation == 2


async def test_a_health_command_runs_in_the_container_instead_of_the_http_probe(
        rig: Rig) -> None:
    exit_code = 0
    seen: list[tuple[str, tuple[str, ...]]] = []

    def answer(container_id: str, argv: tuple[str, ...], timeout: float) -> ExecResult:
        seen.append((container_id, argv))
        return ExecResult(exit_code)

    rig.runtime.exec_handler = answer
    health = HealthSpec(command=("check", "--ready"), interval_s=0.01, timeout_s=0.1,
                        retries=2, startup_timeout=0.3)
    view = await rig.service.start_instance(spec(health=health))  # no HTTP answer at all
    assert view.state == "running" and seen[0] == (view.container_id, ("check", "--ready"))
    exit_code = 1
    await rig.wait(EventType.CRASHED)
    crashed = rig.service.bus.recent(EventType.CRASHED)[0]
    assert "unhealthy: 2 failed" in crashed.details["reason"]


async def test_stop_is_graceful_and_removes_everything(rig: Rig) -> None:
    rig.healthy.add(20001)
    view = await rig.service.start_instance(spec())
    await rig.service.stop_instance("i1", grace=7)
    assert ("stop", (view.container_id, 7)) in rig.runtime.calls
    assert view.container_id not in rig.runtime.containers
    assert not (rig.service.store.directory / "i1.json").exists()
    assert rig.types("i1")[-1] == EventType.REMOVED
    moves = [e.details["to"] for e in rig.service.bus.recent(EventType.STATE)]
    assert moves[-2:] == ["stopping", "stopped"]
    assert not rig.service.bus.recent(EventType.CRASHED)  # a requested stop is no crash
    with pytest.raises(NotFound):
        rig.service.instance("i1")


async def test_leak_is_dumped_and_restarted(rig: Rig) -> None:
    rig.healthy.add(20001)
    view = await rig.service.start_instance(spec())
    record = rig.service.records.get("i1")
    leak = LeakAssessment(True, 2e6, 1.0, 60.0, "memory rising")
    await rig.service.recovery.on_leak(record, leak, 1, None, [(0.0, 1), (60.0, 9)])
    await rig.wait(EventType.RECOVERY_SUCCESS)
    success = rig.service.bus.recent(EventType.RECOVERY_SUCCESS)[0]
    assert success.details["kind"] == "memory_leak" and record.generation == 2
    dump = Path(rig.service.bus.recent(EventType.MEMORY_DUMP)[0].details["path"])
    assert json.loads((dump / "memory.json").read_text())["samples"] == [[0.0, 1], [60.0, 9]]
    assert ("stop", (view.container_id, 1.0)) in rig.runtime.calls


async def test_storage_eviction_keeps_the_record_with_the_reason(rig: Rig) -> None:
    rig.healthy.add(20001)
    view = await rig.service.start_instance(spec())
    record = rig.service.records.get("i1")
    await rig.service.supervisor.evict(record, "storage limit exceeded: 9 > 5", 9, 5)
    after = rig.service.instance("i1")
    assert after.state == "stopped" and after.metadata["evicted"].startswith("storage limit")
    assert view.container_id not in rig.runtime.containers
    assert rig.types("i1")[-1] == EventType.EVICTED


async def test_idle_gc_spares_stable_and_active_instances(tmp_path: Path) -> None:
    clock = FakeClock()
    rig = await make_rig(tmp_path, clock=clock)
    try:
        rig.healthy.update({20001, 20002, 20003})
        for s in (
            spec("old", 20001, idle_timeout=60, state_mode=StateMode.SNAPSHOT),
            spec("stable", 20002, version="2.0.0", idle_timeout=60),
            spec("busy", 20003, idle_timeout=60),
        ):
            await rig.service.start_instance(s)
        rig.service.set_stable_version("a", "u", "2.0.0")
        state_dir = tmp_path / "state" / "a" / "u" / "old"
        (state_dir / "data.txt").write_text("kept")
        clock.advance(120)
        rig.service.record_request("busy")
        result = await rig.service.run_gc("unused")
        assert result == {"collected": ["old"]}
        collected = rig.service.bus.recent(EventType.GC_COLLECTED)[0]
        assert await asyncio.to_thread(Path(collected.details["backup"]).exists)
        assert {v.instance_id for v in rig.service.instances()} == {"stable", "busy"}
    finally:
        await rig.service.close()


async def test_new_agent_adopts_recovers_and_launches(tmp_path: Path) -> None:
    runtime = RecordingRuntime()
    first = await make_rig(tmp_path, runtime)
    first.healthy.update({20001, 20002})
    kept = await first.service.start_instance(spec("kept", 20001))
    lost = await first.service.start_instance(spec("lost", 20002))
    await first.service.close()  # the agent goes away: containers stay
    runtime.crash(lost.container_id or "")  # ... and one dies while nobody watches
    runtime.calls.clear()

    second = await make_rig(tmp_path, runtime)
    second.healthy.update({20001, 20002})
    try:
        report = second.service.adoption
        assert report is not None
        assert report.adopted == ["kept"] and report.recovered == ["lost"]
        assert second.service.instance("kept").container_id == kept.container_id
        await second.wait(EventType.RECOVERY_SUCCESS)
        assert second.service.instance("lost").generation == 2
        starts = runtime.by_call("start")
        assert kept.container_id not in starts and len(starts) == 1
    finally:
        await second.service.close()


async def test_capacity_and_event_subscription(rig: Rig) -> None:
    rig.healthy.add(20001)
    events = rig.service.bus.subscribe()
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0)
    await rig.service.start_instance(spec())
    event = await asyncio.wait_for(first, 1)
    assert event.type == EventType.STATE and event.instance == "i1"
    capacity = rig.service.capacity()
    assert capacity["allocated"]["memory"] == spec().resources.memory
    assert capacity["instances"] == 1
    total, reserved = capacity["total"], capacity["reserved"]
    assert capacity["available"]["cpu"] == pytest.approx(
        total["cpu"] - reserved["cpu"] - spec().resources.cpu)


async def test_secrets_survive_adoption_without_a_record_and_stay_out_of_dumps(
    tmp_path: Path,
) -> None:
    runtime = RecordingRuntime()
    first = await make_rig(tmp_path, runtime)
    first.healthy.add(20001)
    view = await first.service.start_instance(spec("s1", secret_env={"TOKEN": "hunter2-v"}))
    await first.service.close()
    (tmp_path / "instances" / "s1.json").unlink()  # the record is lost: only the label is left

    second = await make_rig(tmp_path, runtime)
    second.healthy.add(20001)
    try:
        report = second.service.adoption
        assert report is not None and report.rebuilt == ["s1"]
        record = second.service.records.get("s1")
        assert dict(record.spec.secret_env) == {"TOKEN": "hunter2-v"}
        assert "hunter2-v" in (tmp_path / "instances" / "s1.json").read_text()
        runtime.crash(view.container_id or "")
        await second.wait(EventType.CRASH_DUMP)
        [dump] = second.service.bus.recent(EventType.CRASH_DUMP)
        inspect = (Path(dump.details["path"]) / "inspect.json").read_text()
        assert "TOKEN=<secret>" in inspect and "hunter2-v" not in inspect
        await second.wait(EventType.RECOVERY_SUCCESS)
        relaunched = runtime.by_call("create")[-1]
        assert relaunched.env["TOKEN"] == "hunter2-v"
    finally:
        await second.service.close()
