"""Green's HTTP checks are well-formed requests: http.client writes the request line, a
path with CR, LF or a space never reaches the wire, and no check goes to a port of the
host's control plane."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from common.errors import InvalidArgument
from coordinator.rollouts.actions import RunChecks
from coordinator.rollouts.preview_checks import PREVIEW_HEADER, PreviewChecker, http_get
from coordinator.rollouts.settings import CheckSpec

SMUGGLED = "/ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /v3/kv/put HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Recorder:
    """A loopback HTTP server that answers 200 "ok" and keeps every byte it received."""

    port: int = 0
    received: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readuntil(b"\r\n\r\n")
        self.received.append(data)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    srv = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    recorder.port = srv.sockets[0].getsockname()[1]
    try:
        yield recorder
    finally:
        srv.close()
        await srv.wait_closed()


async def test_a_check_sends_one_well_formed_request(server: Recorder) -> None:
    reply = await http_get("127.0.0.1", server.port, "/ok?x=1&y=%20", {PREVIEW_HEADER: "1.1.0"})
    assert (reply.status, reply.body) == (200, b"ok")
    [head] = server.received
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /ok?x=1&y=%20 HTTP/1.1"
    assert f"{PREVIEW_HEADER}: 1.1.0" in lines


@pytest.mark.parametrize("path", [SMUGGLED, "/a b", "/a\nb", "/a\0"])
async def test_a_path_that_could_smuggle_a_request_never_reaches_the_wire(
        server: Recorder, path: str) -> None:
    with pytest.raises(InvalidArgument):
        await http_get("127.0.0.1", server.port, path, {})
    assert server.received == []


def unchecked(path: str) -> CheckSpec:
    """A check as a record written before paths were checked could hold it."""
    check = CheckSpec(path="/placeholder")
    object.__setattr__(check, "path", path)
    return check


async def test_an_old_record_with_a_smuggling_path_fails_its_check_without_sending(
        server: Recorder) -> None:
    action = RunChecks("1.1.0", (unchecked(SMUGGLED), CheckSpec(path="/ok")), 0, False)
    report = await PreviewChecker(timeout=2).run(action, "127.0.0.1", server.port)
    [failed] = report.failed_checks
    assert "check path" in failed
    assert len(server.received) == 1 and b"POST" not in server.received[0]


async def test_no_check_goes_to_a_control_plane_port() -> None:
    action = RunChecks("1.1.0", (CheckSpec(path="/ok"),), 0, False)
    report = await PreviewChecker(timeout=0.5).run(action, "127.0.0.1", 2379)
    assert report.failed_checks and "etcd" in report.failed_checks[0]
