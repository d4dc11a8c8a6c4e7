"""In-process agents for integration tests: the real stream client over FakeRuntime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from agent.stream.session import CoordinatorStream, StreamSettings
from common.resources import Resources
from common.stream_messages import Registration
from common.transport import TlsSettings
from tests.e2e.simulated_agent import FakeRuntime


@dataclass
class LocalAgent:
    runtime: FakeRuntime
    stream: CoordinatorStream
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def start_agent(
    coordinators: Sequence[str],
    host_id: str,
    address: str,
    images: Sequence[str] = ("demo:1",),
    cpu: float = 4.0,
    memory: int = 8 << 30,
    building: str = "default",
    runtime_type: type[FakeRuntime] = FakeRuntime,
    tls: TlsSettings | None = None,
) -> LocalAgent:
    identity = Registration(
        host_id,
        building,
        address,
        Resources(cpu=cpu, memory=memory),
        {"rack": "r1"},
        ("cpu", "memory"),
        "test",
    )
    runtime = runtime_type(identity, images, start_delay=0.01)
    stream = CoordinatorStream(
        runtime, StreamSettings(tuple(coordinators), backoff_initial=0.05, backoff_max=0.3,
                                tls=tls or TlsSettings())
    )
    return LocalAgent(runtime, stream, asyncio.create_task(stream.run()))
