"""A grpc.aio server interceptor that admits a call only for an authorized identity.

For each call it reads the peer certificate from the auth context, checks it with
``common.pki_check.check_peer`` (CA, CRL, validity, the landlord:// identity) and asks
``coordinator.api.authz.decide``. A refused certificate answers UNAUTHENTICATED, a refused
method PERMISSION_DENIED; both messages name the identity (when known) and the method, and
both are logged. The admitted identity is available to the servicer through
``caller_identity()`` for the duration of the call.

The trust (CA and CRL) comes from a callable, so a reload can swap it without touching
open streams. Streaming calls are kept in ``OpenStreams`` (coordinator/api/open_streams.py)
with their peer certificate, so that after a reload those whose certificate is no longer
trusted are ended.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import grpc

from common.clock import Clock
from common.identity import Identity
from common.pki_check import Refusal, Trust, check_peer
from coordinator.api.authz import decide
from coordinator.api.handler_shapes import awaited, items
from coordinator.api.open_streams import OpenStreams

__all__ = ["AuthzInterceptor", "caller_identity"]

log = logging.getLogger(__name__)

PEER_CERT_KEY = "x509_pem_cert"
_CALLER: ContextVar[Identity | None] = ContextVar("landlord_caller", default=None)


def caller_identity() -> Identity | None:
    """The identity the interceptor admitted for the current call (None without it)."""
    return _CALLER.get()


class AuthzInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, trust: Callable[[], Trust], clock: Clock,
                 streams: OpenStreams | None = None) -> None:
        self._trust = trust
        self._clock = clock
        self.streams = streams if streams is not None else OpenStreams()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        return _guarded(handler, details.method, self._admit, self._watched)

    def _watched(self, context: Any, method: str, identity: Identity,
                 items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A stream's items, ended when a reload no longer trusts its certificate."""
        return self.streams.guard(context, method, identity, _peer_pem(context), items)

    async def _admit(self, context: Any, method: str, request: Any | None) -> Identity:
        """The caller's identity, or abort the call (raises) with the reason."""
        now = datetime.fromtimestamp(self._clock.now(), UTC)
        checked = check_peer(_peer_pem(context), self._trust(), now)
        if isinstance(checked, Refusal):
            message = f"{method} refused: {checked}"
            log.warning("unauthenticated call: %s (peer %s)", message, context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        assert isinstance(checked, Identity)
        denial = decide(checked, method, request)
        if denial is not None:
            log.warning("permission denied: %s (peer %s)", denial, context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denial)
        _CALLER.set(checked)
        return checked


def _peer_pem(context: Any) -> Any:
    return (context.auth_context().get(PEER_CERT_KEY) or [None])[0]


Admit = Callable[[Any, str, Any], Awaitable[Identity]]
Watch = Callable[[Any, str, Identity, AsyncIterator[Any]], AsyncIterator[Any]]


def _guarded(handler: grpc.RpcMethodHandler, method: str, admit: Admit, watch: Watch
             ) -> grpc.RpcMethodHandler:
    """``handler`` with ``admit`` run before its behavior, for each of the four call shapes;
    the items of the two that stream responses pass through ``watch``."""
    codec = {"request_deserializer": handler.request_deserializer,
             "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await admit(context, method, request)
            return await awaited(inner_uu(request, context))

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            identity = await admit(context, method, request)
            async for item in watch(context, method, identity,
                                    items(inner_us(request, context))):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            await admit(context, method, None)
            return await awaited(inner_su(requests, context))

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        identity = await admit(context, method, None)
        async for item in watch(context, method, identity, items(inner_ss(requests, context))):
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)
