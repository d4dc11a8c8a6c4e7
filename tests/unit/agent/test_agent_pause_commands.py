"""PauseInstance and ResumeInstance on the agent, over a recording runtime and data plane: a
paused instance is frozen after its drain, never probed or recovered while frozen, thawed
with the same container, and thawed before a stop (so SIGTERM is handled)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.service import AgentService
from agent.stream.adapter import StreamAdapter
from common.clock import FakeClock
from common.errors import NotFound
from common.event_types import EventType
from common.stream_commands import PauseInstance, ResumeInstance, StopInstance
from common.unit_spec import HealthCheck
from tests.support import async_eventually
from tests.unit.agent.fake_plane import FakePlane
from tests.unit.agent.fake_runtime import RecordingRuntime
from tests.unit.agent.test_agent_stream_adapter import start_command

Host = tuple[StreamAdapter, RecordingRuntime, list[str]]


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    """An agent whose probe fails for a frozen container (as a real one would)."""
    runtime = RecordingRuntime()
    probed: list[str] = []

    async def probe(address: str, port: int, path: str, timeout: float) -> bool:
        frozen = any(c.info.status == "paused" for c in runtime.containers.values())
        probed.append("frozen" if frozen else "ok")
        return not frozen

    config = AgentConfig(host_id="h1", advertise_address="127.0.0.2", building="demo",
                         data_dir=tmp_path, bandwidth=False, startup_probe_interval=0.01)
    service = AgentService(config, runtime, FakeClock(start=1_700_000_000.0), prober=probe)
    await service.open()
    port = StreamAdapter(service, FakePlane(FakeClock()), agent_version="0.1.0")
    await port.prepare()
    stop = asyncio.Event()
    running = asyncio.create_task(port.run(stop))
    yield port, runtime, probed
    stop.set()
    await running
    await service.close()


async def _state(port: StreamAdapter, instance_id: str, state: str) -> None:
    async def reached() -> bool:
        return [r.state for r in port.snapshot() if r.instance_id == instance_id] == [state]

    await async_eventually(reached, timeout=5, message=f"{instance_id} {state}")


async def test_pause_freezes_after_the_drain_and_resume_thaws_the_same_container(
        host: Host) -> None:
    port, runtime, probed = host
    command = start_command(state_mode="none", health=HealthCheck("/", (), 0.01, 0.1, 2),
                            healthy_threshold=1, warmup_s=0.0)
    await port.execute(command)
    await _state(port, command.instance_id, "running")
    (container,) = runtime.containers

    await port.execute(PauseInstance(command.instance_id, settle_s=0.05))
    await _state(port, command.instance_id, "paused")
    assert runtime.by_call("pause") == [container]
    await port.execute(PauseInstance(command.instance_id, settle_s=0.01))  # a replay
    seen = len(probed)
    await asyncio.sleep(0.3)  # thirty probe intervals
    assert probed[seen:] == [] and "frozen" not in probed  # nothing probes a frozen instance
    assert runtime.by_call("kill") == [] and len(runtime.by_call("create")) == 1
    assert port.snapshot()[0].state == "paused"

    await port.execute(ResumeInstance(command.instance_id))
    await _state(port, command.instance_id, "running")
    assert runtime.by_call("unpause") == [container]
    assert list(runtime.containers) == [container]  # the same container, not a restart

    async def probes_again() -> bool:
        return len(probed) > seen

    await async_eventually(probes_again, timeout=5, message="probes again")
    events = (await port.next_changes(0.0)).events
    assert {EventType.PAUSED, EventType.RESUMED} <= {e.type for e in events}

    with pytest.raises(NotFound):
        await port.execute(PauseInstance("nobody-here"))

    await port.execute(PauseInstance(command.instance_id, settle_s=0.01))
    await _state(port, command.instance_id, "paused")
    await port.execute(StopInstance(command.instance_id, 1.0, drain=True))

    async def gone() -> bool:
        return not port.snapshot()

    await async_eventually(gone, timeout=5, message="stopped")
    calls = [name for name, _ in runtime.calls if name in ("unpause", "stop")]
    assert calls[-2:] == ["unpause", "stop"]  # thawed first, so SIGTERM is handled
