"""Limits per caller, decided before a call's request is read, so that one client (or a few)
cannot make the coordinator slow or large for the others.

- Calls and streams in progress per identity (the ``landlord://`` URI of the client
  certificate; without mutual TLS, per connection) are capped: one more answers
  RESOURCE_EXHAUSTED at once, naming the identity and the limit.
- Publishes (requests of up to 32 MiB) are handled a few at a time, at most half of them
  for one identity; the others wait for a turn, then answer RESOURCE_EXHAUSTED. (grpc core
  still receives a waiting call's message into its own buffers, so this bounds the work
  and the parsed copies, not the bytes received: bench/abuse.py measures it.) Once it has
  its turn, a request must arrive within ``read_timeout`` (a client trickling it would
  hold the turn), else DEADLINE_EXCEEDED.
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
from coordinator.api.handler_shapes import awaited, items

__all__ = ["LARGE_REQUEST_METHODS", "CallLimitSettings", "CallLimitsInterceptor",
           "IdentitySlots", "Turns", "caller_key"]

log = logging.getLogger(__name__)

LARGE_REQUEST_METHODS = frozenset({"/landlord.v1.Admin/PublishVersion"})
"""Methods whose requests may be large (up to the transport's 32 MiB): handled a few at a
time."""
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


class CallLimitsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, settings: CallLimitSettings,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.slots = IdentitySlots(settings.per_identity)
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
        turn = self._turn
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(requests: AsyncIterator[Any], context: Any) -> Any:
                async with turn(context, method):
                    request = await self._read(requests, context, method)
                    return await self._within_deadline(context, method,
                                                       inner_uu(request, context))

            return grpc.stream_unary_rpc_method_handler(unary_unary, **codec)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(requests: AsyncIterator[Any], context: Any
                                   ) -> AsyncIterator[Any]:
                async with turn(context, method):
                    request = await self._read(requests, context, method)
                    async for item in items(inner_us(request, context)):
                        yield item

            return grpc.stream_stream_rpc_method_handler(unary_stream, **codec)
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
    async def _turn(self, context: Any, method: str) -> AsyncIterator[None]:
        """Hold one of the caller's slots (and a large-request turn) for the call."""
        key = caller_key(context.auth_context(), context.peer())
        if not self.slots.take(key):
            await self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{method} refused: {key} already has {self.slots.cap} calls or streams in "
                "progress, the most one identity may have (max_calls_per_identity); let "
                "some finish first"))
        try:
            if method in LARGE_REQUEST_METHODS:
                async with self._large_turn(context, method, key):
                    yield
            else:
                yield
        finally:
            self.slots.give_back(key)

    @contextlib.asynccontextmanager
    async def _large_turn(self, context: Any, method: str, key: str) -> AsyncIterator[None]:
        turn = self.turns.turn(key)
        try:
            async with asyncio.timeout(self.settings.large_wait):
                await turn.__aenter__()
        except TimeoutError:
            await self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{method} refused: {self.turns.total} such requests are being handled (one "
                f"identity may have {self.turns.share} of them) and this one waited "
                f"{self.settings.large_wait:g}s for its turn (max_publishes_in_flight); try "
                "again shortly"))
        try:
            yield
        finally:
            await turn.__aexit__(None, None, None)

    async def _read(self, requests: AsyncIterator[Any], context: Any, method: str) -> Any:
        """The one request of a unary-request call, which must arrive within the read
        timeout (a client trickling it would hold its turn)."""
        timeout = self.settings.read_timeout
        try:
            async with asyncio.timeout(timeout):
                return await _only(requests, context)
        except TimeoutError:
            await self._refuse(context, grpc.StatusCode.DEADLINE_EXCEEDED, (
                f"{method} refused: its request did not arrive within {timeout:g}s "
                "(request_read_timeout)"))

    async def _within_deadline(self, context: Any, method: str, call: Any) -> Any:
        deadline = self.settings.unary_deadline
        try:
            async with asyncio.timeout(deadline) as scope:
                return await awaited(call)
        except TimeoutError:
            if not scope.expired():
                raise
        await self._refuse(context, grpc.StatusCode.DEADLINE_EXCEEDED, (
            f"{method} ran longer than {deadline:g}s on the coordinator (call_deadline) and "
            "was stopped; check what it changed before calling again"))

    async def _refuse(self, context: Any, code: grpc.StatusCode, message: str) -> None:
        """Abort the call (raises); warn about refusals at most every few seconds."""
        self.refused += 1
        now = self._monotonic()
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
