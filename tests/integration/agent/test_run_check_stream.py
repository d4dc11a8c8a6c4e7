"""RunCheck end to end on one host: the coordinator's CheckCalls.run_check sends it over
a real gRPC agent stream, the agent's stream client hands it to the host port, Docker runs
it in a demo-app container, and the exit code and output come back in a report.

The coordinator side is a stand-in servicer (no etcd, no leadership) that speaks through
the coordinator's own session, conversion and CheckCalls code."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agent_fixtures import AgentHarness, http_get, make_spec

from agent.host_port import HostPort
from agent.stream_client import CoordinatorStream, StreamSettings
from common.gen.landlord.v1 import agent_pb2, agent_pb2_grpc
from common.resources import Resources
from common.transport.factory import bound_server, create_server
from coordinator.check_calls import CheckCalls
from coordinator.convert_agent import command_to_pb, from_seconds, report_from_pb
from coordinator.fleet import Fleet, HostSession
from coordinator.keys import KeyLayout
from coordinator.records import InstanceRecord
from coordinator.state import ClusterState, Versioned


class StandInCoordinator(agent_pb2_grpc.AgentStreamServicer):
    """Registers an agent, sends what its session queues, hands report results over."""

    def __init__(self, fleet: Fleet, checks: CheckCalls) -> None:
        self.fleet = fleet
        self.checks = checks

    async def Session(self, request_iterator: AsyncIterator[agent_pb2.AgentMessage],
                      context: Any) -> AsyncIterator[agent_pb2.CoordinatorMessage]:
        first = await anext(aiter(request_iterator))
        reg = first.register
        session = HostSession(reg.host_id, reg.building, reg.address, 0.0)
        self.fleet.attach(session, 0.0)
        yield agent_pb2.CoordinatorMessage(registered=agent_pb2.Registered(
            coordinator_id="stand-in", report_interval=from_seconds(0.05)))

        async def read() -> None:
            async for message in request_iterator:
                if message.WhichOneof("body") == "report":
                    report = report_from_pb(message.report, session.host_id)
                    self.checks.deliver(report.results)

        reader = asyncio.create_task(read())
        try:
            while (outgoing := await session.next_outgoing()) is not None:
                yield command_to_pb(outgoing)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.fleet.detach(session, 0.0)


async def test_a_check_sent_by_the_coordinator_runs_in_docker_and_its_output_returns(
        harness: AgentHarness) -> None:
    agent = await harness.agent()
    spec = make_spec("check-stream-1")
    assert (await agent.start_instance(spec)).state == "running"
    host_id = agent.config.host_id

    state = ClusterState(KeyLayout())
    state.instances[spec.instance_id] = Versioned(InstanceRecord(
        spec.instance_id, "test", "demo", "1.0.0", "blue", host_id, spec.port,
        Resources(cpu=1.0, memory=128 << 20), 0.0), 1)
    fleet = Fleet()
    control = CheckCalls(state, fleet)
    server = create_server()
    agent_pb2_grpc.add_AgentStreamServicer_to_server(StandInCoordinator(fleet, control),
                                                     server)
    port = bound_server(server, "127.0.0.1:0")
    await server.start()
    host = HostPort(agent, None)
    await host.prepare()
    stream = CoordinatorStream(host, StreamSettings((f"127.0.0.1:{port}",),
                                                    report_interval=0.05))
    running = asyncio.create_task(stream.run())
    try:
        await asyncio.wait_for(stream.connected.wait(), 30)
        ok, failing, slow = await asyncio.gather(
            control.run_check(spec.instance_id, ["sh", "-c", "echo v=$VERSION"], 10.0),
            control.run_check(spec.instance_id, ["sh", "-c", "echo no >&2; exit 4"], 10.0),
            control.run_check(spec.instance_id, ["sleep", "60"], 1.0),
        )
        assert (ok.ok, ok.exit_code, ok.stdout, ok.error) == (True, 0, "v=1.0.0\n", "")
        assert (failing.ok, failing.exit_code, failing.stderr) == (True, 4, "no\n")
        assert not slow.ok and slow.timed_out and slow.error == "timed out after 1s (killed)"
        missing = await control.run_check(spec.instance_id, ["no-such-binary"], 5.0)
        assert missing.ok and missing.exit_code != 0
        assert http_get(spec.port, "/")[0] == 200  # the app kept serving throughout
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await host.commands.close(5.0)
        await server.stop(None)
