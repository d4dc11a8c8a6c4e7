"""Limits per caller, decided before a call's request is read, so that one client (or a few)
cannot make the coordinator slow or large for the others.

- Calls and streams in progress per identity (the ``landlord://`` URI of the client
  certificate; without mutual TLS, per connection) are capped: one more answers
  RESOURCE_EXHAUSTED at once, naming the identity and the limit.
- Connections with calls in progress per identity (without a client certificate: per peer
  address) are capped too: a call on one more connection answers RESOURCE_EXHAUSTED, so
  one identity cannot hold every connection with its calls. (A connection without calls
  is closed by the idle timeout, ``ConnectionLimits``.)
- Publishes are handled a few at a time, at most half of them for one identity; a few
  more of each identity wait for a turn, then answer RESOURCE_EXHAUSTED, and any beyond
  those are refused at once. grpc core receives a waiting call's message into its own
  buffers (the server's receive limit, 4 MiB, bounds each), so the waiting line bounds the
  bytes held (per identity, so that one identity filling it does not refuse the others):
  bench/publish_memory.py measures it. Once it has its turn, a request must arrive within
  ``read_timeout`` (a client trickling it would hold the turn), else DEADLINE_EXCEEDED.

Refusals are counted with the admin call metrics (method, status code) through
``observe``, as the call metrics interceptor (inside this one) never sees them.
- A unary call may run on the coordinator for ``unary_deadline`` seconds at most; then it
  answers DEADLINE_EXCEEDED (every wait below it has its own timeout too; this one bounds
  their sum).

To decide before the request is read, a unary method is served with the stream-request
shape of handler (the wire is the same): the behavior takes its turn, then reads the one
request. This interceptor must be the outermost, so the others see the handler's own shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from common.identity import SCHEME
from coordinator.api.call_status import STOPPED_AT
from coordinator.api.handler_shapes import awaited, items
from coordinator.api.metrics_interceptor import ADMIN_PREFIX
from coordinator.api.request_size import TooLarge, size_guard, too_large_text

__all__ = ["LARGE_REQUEST_METHODS", "CallLimitSettings", "CallLimitsInterceptor",
           "IdentityConnections", "IdentitySlots", "Turns", "caller_key", "connection_owner"]

log = logging.getLogger(__name__)

LARGE_REQUEST_METHODS = frozenset({"/landlord.v1.Admin/PublishVersion"})
"""Methods whose requests may be large (up to the server's 4 MiB receive limit): handled a
few at a time."""
Observe = Callable[[str, str, float], None]
"""Where a refused admin call is counted: (method without the service, status name,
seconds)."""
REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two warnings about refused calls (a flood must not flood the log)."""


@dataclass(frozen=True)
class CallLimitSettings:
    per_identity: int = 64
    """Calls and streams one identity may have in progress."""
    large_in_flight: int = 4
    """Calls of ``LARGE_REQUEST_METHODS`` handled at once."""
    large_wait: float = 10.0
    """Seconds such a call waits for its turn."""
    large_waiting: int = 8
    """Calls of ``LARGE_REQUEST_METHODS`` one identity may have waiting for a turn beyond
    its share; more are refused at once (grpc holds a waiting call's message)."""
    connections_per_identity: int = 128
    """Connections one identity may have calls in progress on (0: no cap)."""
    unary_deadline: float = 60.0
    """Seconds a unary call may run."""
    read_timeout: float = 10.0
    """Seconds a unary call's request may take to arrive once the call has its turn."""


class IdentitySlots:
    """Calls in progress per caller key, at most ``cap`` each. A key holding none is
    forgotten, so the table is as large as the set of callers with calls in progress."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._held: dict[str, int] = {}

    def take(self, key: str) -> bool:
        """One more call for ``key``, unless it holds ``cap`` already (False)."""
        held = self._held.get(key, 0)
        if held >= self.cap:
            return False
        self._held[key] = held + 1
        return True

    def give_back(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    def __len__(self) -> int:
        return len(self._held)


class IdentityConnections:
    """Connections (peers) with calls in progress per identity, at most ``cap`` each
    (0: no cap); a connection holding no call is forgotten."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._calls: dict[str, dict[str, int]] = {}

    def take(self, owner: str, peer: str) -> bool:
        """One more call of ``owner`` on connection ``peer``; False when that would be one
        connection more than ``cap``."""
        calls = self._calls.setdefault(owner, {})
        if peer not in calls and self.cap and len(calls) >= self.cap:
            if not calls:
                del self._calls[owner]
            return False
        calls[peer] = calls.get(peer, 0) + 1
        return True

    def give_back(self, owner: str, peer: str) -> None:
        calls = self._calls.get(owner, {})
        left = calls.get(peer, 0) - 1
        if left > 0:
            calls[peer] = left
            return
        calls.pop(peer, None)
        if not calls:
            self._calls.pop(owner, None)

    def held(self, owner: str) -> int:
        """Connections ``owner`` has calls in progress on."""
        return len(self._calls.get(owner, {}))


class Turns:
    """``total`` turns at once, at most ``share`` of them held by one key; the others wait
    in line (so one identity, trickling its requests, cannot hold every turn)."""

    def __init__(self, total: int, share: int) -> None:
        self.total = total
        self.share = share
        self._all = asyncio.Semaphore(total)
        self._mine: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """Wait for a turn of ``key``'s share, then for one of all; held inside."""
        mine, users = self._mine.get(key) or (asyncio.Semaphore(self.share), 0)
        self._mine[key] = (mine, users + 1)
        try:
            async with mine, self._all:
                yield
        finally:
            mine, users = self._mine[key]
            if users > 1:
                self._mine[key] = (mine, users - 1)
            else:
                del self._mine[key]

    def callers(self, key: str) -> int:
        """Calls of ``key`` holding or waiting for a turn."""
        return self._mine.get(key, (None, 0))[1]

    def __len__(self) -> int:
        """Keys holding or waiting for a turn."""
        return len(self._mine)


def caller_key(auth: Mapping[str, Sequence[bytes]], peer: str) -> str:
    """Who the limits count a call against: the certificate's ``landlord://`` URI (the CA
    vouched for it in the handshake), else the certificate itself, else the connection
    (``peer``: plain text on loopback has no identities)."""
    for name in auth.get("x509_subject_alternative_name", ()):
        text = name.decode(errors="replace")
        if text.startswith(SCHEME):
            return text
    pem = auth.get("x509_pem_cert")
    if pem:
        return f"certificate {hashlib.sha256(pem[0]).hexdigest()[:16]}"
    return peer


def connection_owner(auth: Mapping[str, Sequence[bytes]], peer: str) -> str:
    """Whom a connection counts against: ``caller_key``'s certificate identity, else the
    peer's address without its port (``ipv4:192.0.2.7``)."""
    key = caller_key(auth, peer)
    return key if key != peer else peer.rsplit(":", 1)[0]


class CallLimitsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, settings: CallLimitSettings,
                 monotonic: Callable[[], float] = time.monotonic,
                 observe: Observe | None = None) -> None:
        self.settings = settings
        self.observe = observe
        self.slots = IdentitySlots(settings.per_identity)
        self.connections = IdentityConnections(settings.connections_per_identity)
        self.turns = Turns(settings.large_in_flight, max(1, settings.large_in_flight // 2))
        self._monotonic = monotonic
        self._last_warning = -REFUSAL_LOG_INTERVAL
        self.refused = 0
        """Calls refused so far (RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        return self._limited(handler, details.method)

    def _limited(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        codec = {"request_deserializer": handler.request_deserializer,
                 "response_serializer": handler.response_serializer}
        # a unary request is read here: one over its method's size is not parsed
        guarded = {**codec,
                   "request_deserializer": size_guard(handler.request_deserializer, method)}
        turn = self._turn
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(requests: AsyncIterator[Any], context: Any) -> Any:
                async with turn(context, method) as started:
                    request = await self._read(requests, context, method, started)
                    return await self._within_deadline(context, method,
                                                       inner_uu(request, context))

            return grpc.stream_unary_rpc_method_handler(unary_unary, **guarded)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(requests: AsyncIterator[Any], context: Any
                                   ) -> AsyncIterator[Any]:
                async with turn(context, method) as started:
                    request = await self._read(requests, context, method, started)
                    async for item in items(inner_us(request, context)):
                        yield item

            return grpc.stream_stream_rpc_method_handler(unary_stream, **guarded)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: Any) -> Any:
                async with turn(context, method):
                    return await awaited(inner_su(requests, context))

            return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
        inner_ss = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[Any], context: Any
                                ) -> AsyncIterator[Any]:
            async with turn(context, method):
                async for item in items(inner_ss(requests, context)):
                    yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)

    @contextlib.asynccontextmanager
    async def _turn(self, context: Any, method: str) -> AsyncIterator[float]:
        """Hold one of the caller's slots, its connection's place among the identity's
        (and a large-request turn) for the call."""
        auth, peer = context.auth_context(), context.peer()
        key, owner = caller_key(auth, peer), connection_owner(auth, peer)
        started = self._monotonic()
        if not self.connections.take(owner, peer):
            await self._refuse(context, method, grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{method} refused: {owner} already has calls in progress on "
                f"{self.connections.cap} connections, the most one identity may have "
                "(max_connections_per_identity); use fewer connections"), started)
        try:
            if not self.slots.take(key):
                await self._refuse(context, method, grpc.StatusCode.RESOURCE_EXHAUSTED, (
                    f"{method} refused: {key} already has {self.slots.cap} calls or streams "
                    "in progress, the most one identity may have (max_calls_per_identity); "
                    "let some finish first"), started)
            try:
                if method in LARGE_REQUEST_METHODS:
                    async with self._large_turn(context, method, key, started):
                        yield started
                else:
                    yield started
            finally:
                self.slots.give_back(key)
        finally:
            self.connections.give_back(owner, peer)

    @contextlib.asynccontextmanager
    async def _large_turn(self, context: Any, method: str, key: str,
                          started: float) -> AsyncIterator[None]:
        if self.turns.callers(key) >= self.turns.share + self.settings.large_waiting:
            await self._refuse(context, method, grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{method} refused: {key} already has {self.turns.callers(key)} such "
                f"requests handled or waiting for a turn, the most one identity may have "
                f"(max_publishes_waiting); try again shortly"), started)
        turn = self.turns.turn(key)
        try:
            async with asyncio.timeout(self.settings.large_wait):
                await turn.__aenter__()
        except TimeoutError:
            await self._refuse(context, method, grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{method} refused: {self.turns.total} such requests are being handled (one "
                f"identity may have {self.turns.share} of them) and this one waited "
                f"{self.settings.large_wait:g}s for its turn (max_publishes_in_flight); try "
                "again shortly"), started)
        try:
            yield
        finally:
            await turn.__aexit__(None, None, None)

    async def _read(self, requests: AsyncIterator[Any], context: Any, method: str,
                    started: float) -> Any:
        """The one request of a unary-request call, which must arrive within the read
        timeout (a client trickling it would hold its turn)."""
        timeout = self.settings.read_timeout
        try:
            async with asyncio.timeout(timeout):
                request = await _only(requests, context)
        except TimeoutError:
            await self._refuse(context, method, grpc.StatusCode.DEADLINE_EXCEEDED, (
                f"{method} refused: its request did not arrive within {timeout:g}s "
                "(request_read_timeout)"), started)
        if isinstance(request, TooLarge):
            await self._refuse(context, method, grpc.StatusCode.INVALID_ARGUMENT,
                               too_large_text(method, request), started)
        return request

    async def _within_deadline(self, context: Any, method: str, call: Any) -> Any:
        deadline = self.settings.unary_deadline
        stopped_at = STOPPED_AT.set(asyncio.get_running_loop().time() + deadline)
        try:
            async with asyncio.timeout(deadline) as scope:
                return await awaited(call)
        except TimeoutError:
            if not scope.expired():
                raise
        finally:
            STOPPED_AT.reset(stopped_at)
        await self._refuse(context, "", grpc.StatusCode.DEADLINE_EXCEEDED, (
            f"{method} ran longer than {deadline:g}s on the coordinator (call_deadline) and "
            "was stopped; check what it changed before calling again"))

    async def _refuse(self, context: Any, method: str, code: grpc.StatusCode,
                      message: str, started: float | None = None) -> None:
        """Abort the call (raises); warn about refusals at most every few seconds. An admin
        ``method`` is counted with the call metrics (empty: the call metrics interceptor
        saw the call itself)."""
        self.refused += 1
        now = self._monotonic()
        if self.observe is not None and method.startswith(ADMIN_PREFIX):
            self.observe(method[len(ADMIN_PREFIX):], code.name,
                         now - (now if started is None else started))
        if now - self._last_warning >= REFUSAL_LOG_INTERVAL:
            self._last_warning = now
            log.warning("%s (peer %s; %d call(s) refused by limits so far)", message,
                        context.peer(), self.refused)
        await context.abort(code, message)


async def _only(requests: AsyncIterator[Any], context: Any) -> Any:
    """The one request of a unary-request call."""
    async for request in requests:
        return request
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request")
