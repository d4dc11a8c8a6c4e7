"""CheckCalls.run_check: RunCheck goes to the instance's host, its result comes back in a
report; the protobuf edge carries the command and the result's exit code and output."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import NotFound, Unavailable
from common.gen.landlord.v1 import agent_pb2
from common.resources import Resources
from common.stream_commands import Command, RunCheck
from common.stream_convert import command_from_pb, command_to_pb, report_from_pb
from common.stream_messages import CommandResult
from coordinator.fleet.check_calls import CheckCalls
from coordinator.fleet.sessions import Fleet, HostSession
from coordinator.state.cluster_state import ClusterState, Versioned
from coordinator.state.keys import KeyLayout
from coordinator.state.records import InstanceRecord


def checks(fleet: Fleet, margin_s: float = 10.0) -> CheckCalls:
    state = ClusterState(KeyLayout())
    record = InstanceRecord("web-green-1", "shop", "web", "1.1.0", "green", "h2", 20001,
                            Resources(cpu=0.5, memory=64 << 20), 1.0)
    state.instances[record.instance_id] = Versioned(record, 5)
    return CheckCalls(state, fleet, answer_margin_s=margin_s)


def connect(fleet: Fleet, host_id: str = "h2") -> HostSession:
    session = HostSession(host_id, "b1", "127.0.0.3", 0.0)
    fleet.attach(session, 0.0)
    return session


async def test_a_check_goes_to_the_instances_host_and_its_result_comes_back() -> None:
    fleet = Fleet()
    c = checks(fleet)
    session = connect(fleet)
    running = asyncio.create_task(c.run_check("web-green-1", ["cat", "/ready"], 2.0))
    sent = await asyncio.wait_for(session.next_outgoing(), 5)
    assert sent is not None and sent.command == RunCheck("web-green-1",
                                                                ("cat", "/ready"), 2.0)
    assert sent.command_id.startswith("check:")
    answer = CommandResult(sent.command_id, True, "", 1, "out", "err")
    c.deliver([CommandResult("check:other", True), answer])
    assert await asyncio.wait_for(running, 5) == answer
    c.deliver([answer])  # a late duplicate is ignored
    assert c.awaited == 0


async def test_a_check_fails_when_the_host_is_away_or_silent() -> None:
    fleet = Fleet()
    c = checks(fleet, margin_s=0.05)
    with pytest.raises(NotFound):
        await c.run_check("nobody", ["true"], 1.0)
    with pytest.raises(Unavailable, match="not connected"):
        await c.run_check("web-green-1", ["true"], 1.0)
    session = connect(fleet)
    with pytest.raises(Unavailable, match="did not answer"):
        await c.run_check("web-green-1", ["true"], 0.05)
    waiting = asyncio.create_task(c.run_check("web-green-1", ["true"], 30.0))
    await asyncio.wait_for(session.next_outgoing(), 5)
    await asyncio.wait_for(session.next_outgoing(), 5)
    session.close("agent went away")
    with pytest.raises(Unavailable, match="disconnected"):
        await asyncio.wait_for(waiting, 5)
    assert c.awaited == 0


def test_the_protobuf_edge_carries_the_check_and_its_result() -> None:
    message = command_to_pb(Command("check:1", RunCheck("i1", ("sh", "-c", "x"), 2.5)))
    assert message.command_id == "check:1"
    assert command_from_pb(message).command == RunCheck("i1", ("sh", "-c", "x"), 2.5)
    pb = agent_pb2.StatusReport(sequence=1, results=[agent_pb2.CommandResult(
        command_id="check:1", ok=False, error="timed out after 2.5s (killed)", exit_code=-1,
        stdout="partial", stderr="", output_truncated=True, timed_out=True)])
    [got] = report_from_pb(pb, "h2").results
    assert got == CommandResult("check:1", False, "timed out after 2.5s (killed)", -1,
                                "partial", "", True, True)
