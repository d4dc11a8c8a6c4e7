"""Open streams keep their peer certificate; a recheck ends those no longer trusted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from common.identity import Identity, Role
from common.pki import CertificateAuthority, LeafRequest, issue, new_ca, revoke
from common.pki_check import RefusalKind, Trust
from coordinator.api.open_streams import OpenStreams

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise Aborted(details)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return new_ca("test CA", NOW, days=3650)


class Behavior:
    """A stream behavior that yields what it is given and records that it was closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.finished = False

    async def items(self) -> AsyncIterator[int]:
        try:
            while (item := await self.queue.get()) is not None:
                yield item
        finally:
            self.finished = True


async def test_a_revoked_stream_ends_and_the_others_go_on(ca: CertificateAuthority) -> None:
    streams = OpenStreams()
    h1 = issue(ca, LeafRequest(Identity(Role.HOST, "h1")), NOW)
    h2 = issue(ca, LeafRequest(Identity(Role.HOST, "h2")), NOW)
    got: dict[str, list[int]] = {"h1": [], "h2": []}
    behaviors = {"h1": Behavior(), "h2": Behavior()}
    contexts = {"h1": Context(), "h2": Context()}

    async def consume(name: str, pem: bytes) -> None:
        async for item in streams.guard(contexts[name], "/landlord.v1.AgentStream/Session",
                                        Identity(Role.HOST, name), pem,
                                        behaviors[name].items()):
            got[name].append(item)

    tasks = {name: asyncio.create_task(consume(name, issued.cert_pem))
             for name, issued in (("h1", h1), ("h2", h2))}
    for behavior in behaviors.values():
        behavior.queue.put_nowait(1)
    await asyncio.sleep(0.01)
    assert got == {"h1": [1], "h2": [1]} and len(streams) == 2
    assert streams.recheck(Trust((ca.cert,)), NOW) == []  # nothing changed
    crl = revoke(ca, None, [h1.cert.serial_number], NOW)
    [ended] = streams.recheck(Trust((ca.cert,), (crl,)), NOW + timedelta(seconds=1))
    assert ended.identity == Identity(Role.HOST, "h1") and ended.refusal is not None
    assert ended.refusal.kind is RefusalKind.REVOKED
    with pytest.raises(Aborted):
        await asyncio.wait_for(tasks["h1"], 2)
    assert behaviors["h1"].finished  # its finally ran (the agent session is closed)
    status = contexts["h1"].status
    assert status is not None and status[0] == grpc.StatusCode.UNAUTHENTICATED
    assert status[1].startswith("/landlord.v1.AgentStream/Session ended: host/h1: revoked")
    # h2 streams on, then ends normally and leaves the registry
    behaviors["h2"].queue.put_nowait(2)
    behaviors["h2"].queue.put_nowait(None)
    await asyncio.wait_for(tasks["h2"], 2)
    assert got["h2"] == [1, 2] and contexts["h2"].status is None
    assert len(streams) == 0


async def test_another_ca_or_expiry_ends_a_stream(ca: CertificateAuthority) -> None:
    streams = OpenStreams()
    viewer = issue(ca, LeafRequest(Identity(Role.VIEWER, "bob"), days=2), NOW)
    behavior = Behavior()
    context = Context()

    async def consume() -> None:
        async for _ in streams.guard(context, "/landlord.v1.Admin/StreamEvents",
                                     Identity(Role.VIEWER, "bob"), viewer.cert_pem,
                                     behavior.items()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    other = new_ca("another CA", NOW)
    [ended] = streams.recheck(Trust((other.cert,)), NOW)
    assert ended.refusal is not None and ended.refusal.kind is RefusalKind.UNTRUSTED
    with pytest.raises(Aborted):
        await asyncio.wait_for(task, 2)
    # expired since it opened
    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    [ended] = streams.recheck(Trust((ca.cert,)), NOW + timedelta(days=3))
    assert ended.refusal is not None and ended.refusal.kind is RefusalKind.EXPIRED
    with pytest.raises(Aborted):
        await asyncio.wait_for(task, 2)


async def test_a_cancelled_stream_leaves_the_registry(ca: CertificateAuthority) -> None:
    streams = OpenStreams()
    admin = issue(ca, LeafRequest(Identity(Role.ADMIN, "alice")), NOW)
    behavior = Behavior()

    async def consume() -> None:
        async for _ in streams.guard(Context(), "/landlord.v1.Admin/WatchRollout",
                                     Identity(Role.ADMIN, "alice"), admin.cert_pem,
                                     behavior.items()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    assert len(streams) == 1
    task.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(streams) == 0 and behavior.finished


async def test_a_stream_stuck_in_a_send_is_ended_too(ca: CertificateAuthority) -> None:
    """A client that stops reading leaves the call waiting in a send (outside the
    behavior): the refusal cancels the call there, and the behavior is closed after."""
    streams = OpenStreams()
    h3 = issue(ca, LeafRequest(Identity(Role.HOST, "h3")), NOW)
    behavior = Behavior()
    sending = asyncio.Event()

    async def stuck_client() -> None:
        async for _ in streams.guard(Context(), "/landlord.v1.AgentStream/Session",
                                     Identity(Role.HOST, "h3"), h3.cert_pem, behavior.items()):
            sending.set()
            await asyncio.Event().wait()  # the send that never completes

    task = asyncio.create_task(stuck_client())
    behavior.queue.put_nowait(1)
    await asyncio.wait_for(sending.wait(), 2)
    crl = revoke(ca, None, [h3.cert.serial_number], NOW)
    assert len(streams.recheck(Trust((ca.cert,), (crl,)), NOW)) == 1
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    async with asyncio.timeout(2):
        while not behavior.finished:  # noqa: ASYNC110  # closed by the loop's finalizer
            await asyncio.sleep(0.01)
    assert len(streams) == 0
