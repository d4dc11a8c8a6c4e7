"""RunCheck on the agent: the pure mapping (timeout, outcome), the protobuf edge, the stream
adapter over the recording runtime, and the command queue running checks beside other
commands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.runtime.protocol import ExecResult, OutputPiece
from agent.service import AgentService
from agent.stream.adapter import StreamAdapter
from agent.stream.command_queue import CommandQueue
from agent.stream.mapping import (
    CHECK_TIMEOUT_DEFAULT,
    CHECK_TIMEOUT_MAX,
    check_output,
    check_timeout,
)
from common.clock import FakeClock
from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.gen.landlord.v1 import agent_pb2
from common.lifecycle import InstanceState
from common.resources import Resources
from common.stream_commands import (
    AgentCommand,
    Command,
    ExecStream,
    ReadLogs,
    RunCheck,
    SetWeights,
    StartInstance,
)
from common.stream_convert import command_from_pb, command_to_pb
from common.stream_messages import CommandResult
from common.unit_spec import HealthCheck
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
    assert out == CommandResult("", ok=True, exit_code=3, stdout="ready\n",
                                stderr="warn \ufffd\n", output_truncated=True, timed_out=False)


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
    assert command_from_pb(pb) == Command(
        "check:1", RunCheck("web-green-1", ("sh", "-c", "test -f /ready"), 2.5))


# -- stream adapter over the recording runtime --------------------------------------------


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[tuple[StreamAdapter, RecordingRuntime]]:
    runtime = RecordingRuntime()

    async def healthy(address: str, port: int, path: str, timeout: float) -> bool:
        return True

    config = AgentConfig(host_id="h1", advertise_address="127.0.0.2", building="demo",
                         data_dir=tmp_path, bandwidth=False, startup_probe_interval=0.01)
    service = AgentService(config, runtime, FakeClock(), prober=healthy)
    await service.open()
    host = StreamAdapter(service, None)
    await host.prepare()
    yield host, runtime
    await host.commands.close(5.0)
    await service.close()


def start(instance_id: str) -> StartInstance:
    return StartInstance(
        instance_id=instance_id, apartment="shop", unit="web", version="1.2.0", slot="green",
        image="shop/web:1.2.0", port=20001, command=(), env={},
        health=HealthCheck("/", (), 0.01, 0.1, 2),
        resources=Resources(cpu=0.25, memory=64 << 20))


async def test_a_check_runs_in_the_instances_container(
        port: tuple[StreamAdapter, RecordingRuntime]) -> None:
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
    assert out.stdout == "x" * 4096 and out.output_truncated and not out.error


async def test_a_check_needs_a_running_instance(
        port: tuple[StreamAdapter, RecordingRuntime]) -> None:
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


# -- the command queue: checks beside other commands --------------------------------------


class BlockingEndpoint:
    """An AgentEndpoint whose checks wait until released; other commands return at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.done: list[str] = []

    async def execute(self, command: AgentCommand) -> CommandResult | None:
        if isinstance(command, RunCheck):
            self.started.append(command.argv[0])
            await self.release.wait()
            self.done.append("check")
            if command.argv == ("fail",):
                raise NotFound("no instance")
            return CommandResult("", True, exit_code=2, stdout="out", stderr="err",
                                 output_truncated=True)
        self.done.append(type(command).__name__)
        return None

    async def output(self, command: ReadLogs | ExecStream) -> AsyncIterator[OutputPiece]:
        yield OutputPiece(b"one\n")
        yield OutputPiece(end=True, exit_code=0)


def queue_of(endpoint: BlockingEndpoint) -> CommandQueue:
    return CommandQueue(endpoint)  # type: ignore[arg-type]  # only execute() is used


def offer(queue: CommandQueue, command_id: str, command: AgentCommand) -> None:
    queue.offer(command_to_pb(Command(command_id, command)))


async def test_checks_run_beside_other_commands_and_report_their_output() -> None:
    endpoint = BlockingEndpoint()
    queue = queue_of(endpoint)
    worker = asyncio.create_task(queue.run())
    try:
        offer(queue, "check:1", RunCheck("i1", ("ok",), 5.0))
        offer(queue, "check:2", RunCheck("i1", ("fail",), 5.0))
        offer(queue, "check:2", RunCheck("i1", ("fail",), 5.0))  # a replay: queued once
        offer(queue, "weights:3", SetWeights("shop", "web", {"a": 1}))

        async def weights_ran() -> bool:
            return endpoint.done == ["SetWeights"]

        await async_eventually(weights_ran, timeout=5)  # not held up by the checks
        endpoint.release.set()

        async def all_ran() -> bool:
            return queue.commands_run == 3

        await async_eventually(all_ran, timeout=5)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    acks, taken = queue.take()
    results: dict[str, Any] = {r.command_id: r for r in taken}
    ok = results["check:1"]
    assert (ok.ok, ok.exit_code, ok.stdout, ok.stderr, ok.output_truncated) == (
        True, 2, "out", "err", True)
    assert not results["check:2"].ok and "no instance" in results["check:2"].error
    assert results["weights:3"].ok and results["weights:3"].exit_code == 0
    assert set(acks) == {"check:1", "check:2", "weights:3"} and len(acks) == 3
    assert queue.take() == ((), ())


async def test_a_command_the_agent_cannot_read_is_answered_at_once() -> None:
    queue = queue_of(BlockingEndpoint())
    queue.offer(agent_pb2.Command(command_id="new:1"))
    assert queue.done.is_set() and queue.has_news  # reported with the next report
    acks, [result] = queue.take()
    assert acks == () and not result.ok and "unknown command" in result.error


async def test_a_check_under_way_is_cancelled_with_its_session() -> None:
    endpoint = BlockingEndpoint()
    queue = queue_of(endpoint)
    worker = asyncio.create_task(queue.run())
    offer(queue, "check:1", RunCheck("i1", ("ok",), 5.0))

    async def started() -> bool:
        return endpoint.started == ["ok"]

    await async_eventually(started, timeout=5)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    endpoint.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert endpoint.done == [] and queue.take() == ((), ())
