"""Health: thresholds, warm-up and score; the HTTP probe against a local server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.instances.health import HealthTracker, Verdict, http_probe
from agent.instances.spec import HealthSpec


def test_success_threshold_and_warmup() -> None:
    tracker = HealthTracker(HealthSpec(success_threshold=2, warmup=5.0), started=100.0)
    assert tracker.observe(True, 101.0) is Verdict.UNCHANGED  # warming up
    assert tracker.observe(False, 102.0) is Verdict.UNCHANGED  # failures do not count yet
    assert not tracker.healthy
    assert tracker.observe(True, 105.5) is Verdict.BECAME_HEALTHY  # 2 successes, warm
    assert tracker.score == 1.0  # start-up failures are not ill health


def test_failure_threshold_and_score() -> None:
    tracker = HealthTracker(HealthSpec(retries=3), started=0.0)
    assert tracker.observe(True, 1.0) is Verdict.BECAME_HEALTHY
    assert tracker.observe(False, 2.0) is Verdict.UNCHANGED
    assert tracker.observe(True, 3.0) is Verdict.UNCHANGED  # the streak is broken
    assert tracker.observe(False, 4.0) is Verdict.UNCHANGED
    assert tracker.observe(False, 5.0) is Verdict.UNCHANGED
    assert tracker.observe(False, 6.0) is Verdict.BECAME_UNHEALTHY
    assert tracker.score == pytest.approx(2 / 6)


@pytest.fixture
async def server() -> AsyncIterator[int]:
    handlers: set[asyncio.Task[None]] = set()

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            path = line.split()[1]
            status = {b"/ok": b"200 OK", b"/moved": b"302 Found"}.get(path, b"503 Unavailable")
            if path == b"/slow":
                await asyncio.sleep(1)
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        await respond(reader, writer)
        handlers.discard(task)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    for task in list(handlers):
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await srv.wait_closed()


async def test_http_probe(server: int) -> None:
    assert await http_probe("127.0.0.1", server, "/ok", 1.0)
    assert await http_probe("127.0.0.1", server, "/moved", 1.0)
    assert not await http_probe("127.0.0.1", server, "/bad", 1.0)
    assert not await http_probe("127.0.0.1", server, "/slow", 0.2)


async def test_http_probe_refused() -> None:
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not await http_probe("127.0.0.1", port, "/", 0.5)
