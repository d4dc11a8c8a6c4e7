"""A Register that never gets an answer (a coordinator that went away mid-answer, a call
lost on the way) is dropped after ``register_timeout`` and tried again, over a real gRPC
stream: the agent does not wait on it forever."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agent.stream.session import CoordinatorStream, StreamSettings
from common.gen.landlord.v1 import agent_pb2, agent_pb2_grpc
from common.proto_values import duration_to_pb
from common.resources import Resources
from common.stream_messages import Registration
from common.transport.factory import bound_server, create_server
from tests.e2e.simulated_agent import FakeRuntime


class SilentFirst(agent_pb2_grpc.AgentStreamServicer):
    """Reads the first Register and never answers it; answers every later one."""

    def __init__(self) -> None:
        self.registers = 0

    async def Session(self, request_iterator: AsyncIterator[agent_pb2.AgentMessage],
                      context: Any) -> AsyncIterator[agent_pb2.CoordinatorMessage]:
        first = await anext(aiter(request_iterator))
        assert first.WhichOneof("body") == "register"
        self.registers += 1
        if self.registers == 1:
            await asyncio.Event().wait()  # held until the agent gives up on it
        yield agent_pb2.CoordinatorMessage(registered=agent_pb2.Registered(
            coordinator_id="answers", report_interval=duration_to_pb(0.5)))
        async for _ in request_iterator:
            pass


async def test_an_unanswered_register_is_dropped_and_tried_again() -> None:
    servicer = SilentFirst()
    server = create_server()
    agent_pb2_grpc.add_AgentStreamServicer_to_server(servicer, server)
    port = bound_server(server, "127.0.0.1:0")
    await server.start()
    identity = Registration("h-silent", "default", "127.0.0.2",
                            Resources(cpu=1.0, memory=1 << 30), {}, (), "test")
    stream = CoordinatorStream(FakeRuntime(identity), StreamSettings(
        (f"127.0.0.1:{port}",), backoff_initial=0.05, backoff_max=0.2, register_timeout=0.5))
    task = asyncio.create_task(stream.run())
    try:
        await asyncio.wait_for(stream.connected.wait(), timeout=10)
        assert servicer.registers == 2
        assert stream.coordinator_id == "answers"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.stop(None)
