"""A stand-in coordinator for agent tests over a real gRPC stream: the coordinator's own
session, conversion and CheckCalls code, without etcd or leadership.

It registers one agent, sends what its session queues, hands the results of awaited
commands (RunCheck) to CheckCalls, and keeps every result and event the agent reported
so a test can look at them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.service import AgentService
from agent.stream.adapter import StreamAdapter
from agent.stream.session import CoordinatorStream, StreamSettings
from common.gen.landlord.v1 import agent_pb2, agent_pb2_grpc
from common.proto_values import duration_to_pb
from common.stream_convert import command_to_pb, report_from_pb
from common.stream_messages import CommandResult, ReportedEvent
from common.transport.factory import bound_server, create_server
from coordinator.fleet.check_calls import CheckCalls
from coordinator.fleet.sessions import Fleet, HostSession
from coordinator.state.cluster_state import ClusterState
from coordinator.state.keys import KeyLayout


@dataclass
class Heard:
    """Everything the agent reported, in order."""

    results: list[CommandResult] = field(default_factory=list)
    events: list[ReportedEvent] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass
class StandInControl:
    """The coordinator's session table and check calls, without etcd or leadership."""

    fleet: Fleet
    checks: CheckCalls

    async def run_check(self, instance_id: str, argv: Sequence[str],
                        timeout_s: float) -> CommandResult:
        return await self.checks.run_check(instance_id, argv, timeout_s)


class StandInCoordinator(agent_pb2_grpc.AgentStreamServicer):
    def __init__(self, control: StandInControl) -> None:
        self.control = control
        self.heard = Heard()

    async def Session(self, request_iterator: AsyncIterator[agent_pb2.AgentMessage],
                      context: Any) -> AsyncIterator[agent_pb2.CoordinatorMessage]:
        first = await anext(aiter(request_iterator))
        reg = first.register
        session = HostSession(reg.host_id, reg.building, reg.address, 0.0)
        self.control.fleet.attach(session, 0.0)
        yield agent_pb2.CoordinatorMessage(registered=agent_pb2.Registered(
            coordinator_id="stand-in", report_interval=duration_to_pb(0.05)))

        async def read() -> None:
            async for message in request_iterator:
                if message.WhichOneof("body") == "report":
                    report = report_from_pb(message.report, session.host_id)
                    self.heard.results.extend(report.results)
                    self.heard.events.extend(report.events)
                    self.heard.removed.extend(report.removed_instance_ids)
                    self.control.checks.deliver(report.results)

        reader = asyncio.create_task(read())
        try:
            while (outgoing := await session.next_outgoing()) is not None:
                yield agent_pb2.CoordinatorMessage(command=command_to_pb(outgoing))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.control.fleet.detach(session, 0.0)


def fleet_control(state: ClusterState | None = None) -> StandInControl:
    """Sessions and check calls: no store, view, leadership or events."""
    fleet = Fleet()
    return StandInControl(fleet, CheckCalls(state or ClusterState(KeyLayout()), fleet))


@contextlib.asynccontextmanager
async def connected(agent: AgentService, control: StandInControl
                    ) -> AsyncIterator[StandInCoordinator]:
    """The agent (without a data plane) connected to a stand-in coordinator over gRPC,
    its events and usage followed as the daemon does."""
    coordinator = StandInCoordinator(control)
    server = create_server()
    agent_pb2_grpc.add_AgentStreamServicer_to_server(coordinator, server)
    port = bound_server(server, "127.0.0.1:0")
    await server.start()
    host = StreamAdapter(agent, None)
    await host.prepare()
    stream = CoordinatorStream(host, StreamSettings((f"127.0.0.1:{port}",),
                                                    report_interval=0.05))
    stop = asyncio.Event()
    following = asyncio.create_task(host.run(stop))
    running = asyncio.create_task(stream.run())
    try:
        await asyncio.wait_for(stream.connected.wait(), 30)
        yield coordinator
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        stop.set()
        await following  # closes the commands under way
        await server.stop(None)
