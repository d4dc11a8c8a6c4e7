"""RunCheck on the agent: the pure mapping (timeout, outcome), the protobuf edge, the host
port over the recording runtime, and the stream running checks beside other commands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.host_mapping import (
    CHECK_TIMEOUT_DEFAULT,
    CHECK_TIMEOUT_MAX,
    check_output,
    check_timeout,
)
from agent.host_port import HostPort
from agent.runtime.protocol import ExecResult
from agent.service import AgentService
from agent.stream_client import (
    AgentCommand,
    CommandOutput,
    CoordinatorStream,
    HealthParams,
    RunCheck,
    SetWeights,
    StartInstance,
    StreamSettings,
    command_from_pb,
)
from common.clock import FakeClock
from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.gen.landlord.v1 import agent_pb2
from common.lifecycle import InstanceState
from common.resources import Resources
from tests.support import async_eventually
from tests.unit.agent.fake_runtime import RecordingRuntime

# -- pure mapping -------------------------------------------------------------------------


def test_check_timeout_defaults_caps_and_needs_a_command() -> None:
    assert check_timeout(RunCheck("i1", ("true",), 0.0)) == CHECK_TIMEOUT_DEFAULT
    assert check_timeout(RunCheck("i1", ("true",), 2.5)) == 2.5
    assert check_timeout(RunCheck("i1", ("true",), 10_000.0)) == CHECK_TIMEOUT_MAX
    with pytest.raises(InvalidArgument):
        check_timeout(RunCheck("i1", (), 1.0))
    with pytest.raises(InvalidArgument):
        check_timeout(RunCheck("i1", ("",), 1.0))


def test_an_exited_command_completed_whatever_its_code() -> None:
    out = check_output(ExecResult(3, b"ready\n", b"warn \xff\n", truncated=True), 5.0)
    assert out == CommandOutput(exit_code=3, stdout="ready\n", stderr="warn \ufffd\n",
                                truncated=True, timed_out=False, error="")


def test_a_killed_command_did_not_complete() -> None:
    out = check_output(ExecResult(None, b"partial", b"", timed_out=True), 1.5)
    assert out.error == "timed out after 1.5s (killed)"
    assert out.timed_out and out.exit_code == -1 and out.stdout == "partial"
    unknown = check_output(ExecResult(None), 1.0)
    assert unknown.error and not unknown.timed_out


def test_run_check_protobuf_becomes_the_stream_command() -> None:
    pb = agent_pb2.Command(command_id="check:1", run_check=agent_pb2.RunCheck(
        instance_id="web-green-1", argv=["sh", "-c", "test -f /ready"]))
    pb.run_check.timeout.FromMilliseconds(2500)
    assert command_from_pb(pb) == RunCheck("web-green-1", ("sh", "-c", "test -f /ready"), 2.5)


# -- host port over the recording runtime -------------------------------------------------


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[tuple[HostPort, RecordingRuntime]]:
    runtime = RecordingRuntime()

    async def healthy(address: str, port: int, path: str, timeout: float) -> bool:
        return True

    config = AgentConfig(host_id="h1", advertise_address="127.0.0.2", building="demo",
                         data_dir=tmp_path, bandwidth=False, startup_probe_interval=0.01)
    service = AgentService(config, runtime, FakeClock(), prober=healthy)
    await service.open()
    host = HostPort(service, None)
    await host.prepare()
    yield host, runtime
    await host.commands.close(5.0)
    await service.close()


def start(instance_id: str) -> StartInstance:
    return StartInstance(
        instance_id=instance_id, apartment="shop", unit="web", version="1.2.0", slot="green",
        image="shop/web:1.2.0", port=20001, command=(), env={},
        health=HealthParams("/", 0.01, 0.1, 1, 2, 0.0), resources=Resources(cpu=0.25,
                                                                            memory=64 << 20))


async def test_a_check_runs_in_the_instances_container(
        port: tuple[HostPort, RecordingRuntime]) -> None:
    host, runtime = port
    seen: list[tuple[str, tuple[str, ...], float]] = []

    def answer(container_id: str, argv: tuple[str, ...], timeout: float) -> ExecResult:
        seen.append((container_id, argv, timeout))
        return ExecResult(1, b"x" * 5000, b"nope")

    runtime.exec_handler = answer
    with pytest.raises(NotFound):
        await host.execute(RunCheck("web-green-1", ("true",), 1.0))
    await host.execute(start("web-green-1"))

    async def running() -> bool:
        return [r.state for r in host.snapshot()] == ["running"]

    await async_eventually(running, timeout=5)
    out = await host.execute(RunCheck("web-green-1", ("cat", "/ready"), 0.0))
    container = host.service.records.get("web-green-1").container_id
    assert seen == [(container, ("cat", "/ready"), CHECK_TIMEOUT_DEFAULT)]
    assert out is not None and out.exit_code == 1 and out.stderr == "nope"
    assert out.stdout == "x" * 4096 and out.truncated and not out.error


async def test_a_check_needs_a_running_instance(
        port: tuple[HostPort, RecordingRuntime]) -> None:
    host, runtime = port
    await host.execute(start("web-green-2"))

    async def running() -> bool:
        return [r.state for r in host.snapshot()] == ["running"]

    await async_eventually(running, timeout=5)
    record = host.service.records.get("web-green-2")
    record.lifecycle.transition(InstanceState.PAUSED, "paused for the test", 0.0)
    with pytest.raises(FailedPrecondition):
        await host.execute(RunCheck("web-green-2", ("true",), 1.0))
    assert runtime.by_call("exec") == []


# -- the stream: checks beside other commands ---------------------------------------------


class BlockingPort:
    """An AgentPort whose checks wait until released; other commands return at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.done: list[str] = []

    async def execute(self, command: AgentCommand) -> CommandOutput | None:
        if isinstance(command, RunCheck):
            self.started.append(command.argv[0])
            await self.release.wait()
            self.done.append("check")
            if command.argv == ("fail",):
                raise NotFound("no instance")
            return CommandOutput(exit_code=2, stdout="out", stderr="err", truncated=True)
        self.done.append(type(command).__name__)
        return None


async def test_checks_run_beside_other_commands_and_report_their_output() -> None:
    port = BlockingPort()
    stream = CoordinatorStream(port, StreamSettings(("127.0.0.1:1",)))  # type: ignore[arg-type]
    queue: asyncio.Queue[tuple[str, AgentCommand]] = asyncio.Queue()
    worker = asyncio.create_task(stream._execute(queue))
    try:
        queue.put_nowait(("check:1", RunCheck("i1", ("ok",), 5.0)))
        queue.put_nowait(("check:2", RunCheck("i1", ("fail",), 5.0)))
        queue.put_nowait(("weights:3", SetWeights("shop", "web", {"a": 1})))

        async def weights_ran() -> bool:
            return port.done == ["SetWeights"]

        await async_eventually(weights_ran, timeout=5)  # not held up by the checks
        port.release.set()

        async def all_reported() -> bool:
            return len(stream._results) == 3

        await async_eventually(all_reported, timeout=5)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    results: dict[str, Any] = {r.command_id: r for r in stream._results}
    ok = results["check:1"]
    assert (ok.ok, ok.exit_code, ok.stdout, ok.stderr, ok.output_truncated) == (
        True, 2, "out", "err", True)
    assert not results["check:2"].ok and "no instance" in results["check:2"].error
    assert results["weights:3"].ok and results["weights:3"].exit_code == 0
    assert set(stream._acks) == {"check:1", "check:2", "weights:3"}


async def test_a_check_under_way_is_cancelled_with_its_session() -> None:
    port = BlockingPort()
    stream = CoordinatorStream(port, StreamSettings(("127.0.0.1:1",)))  # type: ignore[arg-type]
    queue: asyncio.Queue[tuple[str, AgentCommand]] = asyncio.Queue()
    worker = asyncio.create_task(stream._execute(queue))
    queue.put_nowait(("check:1", RunCheck("i1", ("ok",), 5.0)))

    async def started() -> bool:
        return port.started == ["ok"]

    await async_eventually(started, timeout=5)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    port.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert port.done == [] and stream._results == []
