"""The CLI's one gRPC client: several coordinator addresses, following the leader.

Reads go to the first coordinator that answers. A write sent to a follower fails with
FAILED_PRECONDITION and an ``x-leader`` trailer naming the leader: the call is retried
once there. An address that answers UNAVAILABLE is skipped for the next one. Every other
failure ends the call as ``CallFailed``, which the error boundary prints as one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import Message

from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2_grpc
from common.input_bounds import request_too_large
from common.transport import COORDINATOR_ADDRESS, COORDINATOR_PORT, TlsSettings, create_channel

__all__ = [
    "DEFAULT_ADDRESS",
    "LEADER_TRAILER",
    "AdminClient",
    "CallFailed",
    "ClientSettings",
    "Decision",
    "NextStep",
    "call_unary",
    "decide_after_failure",
    "parse_addresses",
]

DEFAULT_PORT = COORDINATOR_PORT
DEFAULT_ADDRESS = COORDINATOR_ADDRESS
LEADER_TRAILER = "x-leader"


NO_CERTIFICATE_HINT = ("; no client certificate was given: coordinators speak mutual TLS, so "
                       "set LANDLORD_TLS_CA, LANDLORD_TLS_CERT and LANDLORD_TLS_KEY (or "
                       "--tls-ca, --tls-cert, --tls-key)")


class CallFailed(Exception):
    """A call the coordinator refused or no coordinator answered, ready for one line."""

    def __init__(self, what: str, code: str, details: str) -> None:
        super().__init__(f"{what}: {code}: {details}")
        self.what = what
        self.code = code
        self.details = details


@dataclass(frozen=True)
class ClientSettings:
    """Where the coordinators are and how to reach them."""

    addresses: tuple[str, ...] = (DEFAULT_ADDRESS,)
    """Coordinator addresses, tried in this order."""
    timeout: float = 10.0
    """Deadline of each unary call, in seconds (streams have none)."""
    tls: TlsSettings = field(default_factory=TlsSettings)
    """Client certificates and CA; empty means plain HTTP/2 (loopback)."""


def parse_addresses(text: str) -> tuple[str, ...]:
    """``"a:7400, b"`` -> ("a:7400", "b:7400"): comma-separated HOST[:PORT]."""
    addresses: list[str] = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        host, colon, port = item.rpartition(":")
        if not colon:
            host, port = item, str(DEFAULT_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(
                f"--coordinator: {item!r} is not HOST:PORT", field="--coordinator", value=item
            )
        address = f"{host}:{port}"
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InvalidArgument("--coordinator: no address given", field="--coordinator")
    return tuple(addresses)


class NextStep(Enum):
    FAIL = "fail"
    TRY_NEXT = "try-next"
    FOLLOW_LEADER = "follow-leader"


@dataclass(frozen=True)
class Decision:
    step: NextStep
    address: str = ""


def decide_after_failure(
    code: grpc.StatusCode,
    trailers: Iterable[tuple[str, str | bytes]],
    address: str,
    followed_leader: bool,
) -> Decision:
    """What to do after ``address`` failed a call with ``code`` and ``trailers``."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return Decision(NextStep.TRY_NEXT)
    if code == grpc.StatusCode.FAILED_PRECONDITION and not followed_leader:
        for key, value in trailers:
            if key.lower() == LEADER_TRAILER:
                leader = value.decode() if isinstance(value, bytes) else value
                if leader and leader != address:
                    return Decision(NextStep.FOLLOW_LEADER, leader)
    return Decision(NextStep.FAIL)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no details)"


class AdminClient:
    """Calls the Admin service on whichever coordinator answers (use ``async with``)."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._channels: dict[str, Any] = {}
        self._preferred: str | None = None

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    def _stub(self, address: str) -> Any:
        if address not in self._channels:
            self._channels[address] = create_channel(address, tls=self._settings.tls)
        return admin_pb2_grpc.AdminStub(self._channels[address])

    def _order(self) -> list[str]:
        addresses = list(self._settings.addresses)
        if self._preferred is not None:
            addresses = [self._preferred, *(a for a in addresses if a != self._preferred)]
        return addresses

    def _next_or_fail(
        self,
        err: grpc.RpcError,
        address: str,
        pending: list[str],
        tried: Sequence[str],
        followed: bool,
        what: str,
    ) -> bool:
        """Queue the next address to try, or raise; True when the leader was followed."""
        trailers = err.trailing_metadata() or ()
        decision = decide_after_failure(err.code(), trailers, address, followed)
        if decision.step is NextStep.FOLLOW_LEADER:
            self._preferred = decision.address
            pending.insert(0, decision.address)
            return True
        if decision.step is NextStep.TRY_NEXT:
            while pending and pending[0] in tried:
                pending.pop(0)
            if pending:
                return followed
            raise CallFailed(
                what,
                "UNAVAILABLE",
                f"no coordinator answered at {', '.join(tried)} ({_one_line(err.details() or '')})"
                + ("" if self._settings.tls.cert_file else NO_CERTIFICATE_HINT),
            )
        raise _failed(what, err)

    async def unary(self, method: str, request: Message, what: str) -> Any:
        """Call unary ``method`` (e.g. "GetUnit"); ``what`` names the action in errors."""
        pending, tried, followed = self._order(), [], False
        while True:
            address = pending.pop(0)
            tried.append(address)
            try:
                response = await getattr(self._stub(address), method)(
                    request, timeout=self._settings.timeout
                )
            except grpc.RpcError as err:
                followed = self._next_or_fail(err, address, pending, tried, followed, what)
                continue
            if self._preferred is None:
                self._preferred = address
            return response

    async def stream(self, method: str, request: Message, what: str) -> AsyncIterator[Any]:
        """Messages of server-streaming ``method``; fails over only before the first one."""
        pending, tried, followed = self._order(), [], False
        while True:
            address = pending.pop(0)
            tried.append(address)
            call = getattr(self._stub(address), method)(request)
            try:
                first = await call.read()
            except grpc.RpcError as err:
                call.cancel()
                followed = self._next_or_fail(err, address, pending, tried, followed, what)
                continue
            break
        try:
            message = first
            while message is not grpc.aio.EOF:
                yield message
                message = await call.read()
        except grpc.RpcError as err:
            raise _failed(what, err) from None
        finally:
            call.cancel()


def _failed(what: str, err: grpc.RpcError) -> CallFailed:
    code = err.code()
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    details = err.details() or ""
    return CallFailed(what, name, request_too_large(details) or _one_line(details))


def call_unary(settings: ClientSettings, method: str, request: Message, what: str) -> Any:
    """One unary call from synchronous code: connect, call, close."""

    async def run() -> Any:
        async with AdminClient(settings) as client:
            return await client.unary(method, request, what)

    return asyncio.run(run())
