"""A grpc.aio server interceptor that writes one audit event per mutating admin call.

It wraps the behavior of each method in ``AUDITED_METHODS`` (unary, or server-streaming like
SaveSnapshot) and, when the call has ended, whether it returned, was aborted with a status
(by the servicer's error boundary or by the authz interceptor) or was cancelled, hands the
event to a background task: the caller never waits for the etcd write, and a failed write
is logged, never raised.

Place it before the authz interceptor (outermost) so it also sees the calls authz refuses;
the admitted identity comes from ``caller_identity()``, which the authz interceptor sets in
the same task. Without mutual TLS the caller is ``anonymous`` with its peer address.

Only the leader writes events (the log is fenced): a write call on a follower fails with
FAILED_PRECONDITION before it changes anything, and its audit event is dropped with a debug
line; the leader's own calls are all recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc

from common.event_types import EventType
from common.pki import certificate_identity, load_certificate
from coordinator.api.audit import AUDITED_METHODS, OK, AuditEntry, Caller, audit_entry
from coordinator.api.authz_interceptor import PEER_CERT_KEY, caller_identity
from coordinator.api.call_status import call_status as _status
from coordinator.api.call_status import context_call as _call

__all__ = ["AuditInterceptor", "AuditSink"]

log = logging.getLogger(__name__)


class AuditSink(Protocol):
    """Where audit events go (``coordinator.state.events.EventLog``)."""

    async def emit(self, type_: str, message: str = "", **fields: str) -> None: ...


class AuditInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, sink: AuditSink) -> None:
        self._sink = sink
        self._pending: set[asyncio.Task[None]] = set()
        self._last: asyncio.Task[None] | None = None
        """The newest write: each write waits for the one before, so the trail keeps the
        order in which calls ended."""
        self.recorded = 0
        """Audit events handed to the sink (tests and diagnostics)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        method = AUDITED_METHODS.get(details.method)
        if handler is None or method is None:
            return handler
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if not handler.unary_unary:
            return handler
        inner = handler.unary_unary

        async def audited(request: Any, context: Any) -> Any:
            code, message = OK, ""
            try:
                response = inner(request, context)
                return await response if inspect.isawaitable(response) else response
            except asyncio.CancelledError:
                code, message = _cancelled(context)
                raise
            except BaseException as exc:
                code, message = _status(context, exc)
                raise
            finally:
                self._record(method, request, context, code, message)

        return grpc.unary_unary_rpc_method_handler(
            audited, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _streaming(self, method: str, inner: Any) -> Any:
        async def audited(request: Any, context: Any) -> AsyncIterator[Any]:
            code, message = OK, ""
            try:
                async for item in inner(request, context):
                    yield item
            except (asyncio.CancelledError, GeneratorExit):
                code, message = _cancelled(context)
                raise
            except BaseException as exc:
                code, message = _status(context, exc)
                raise
            finally:
                self._record(method, request, context, code, message)

        return audited

    def _record(self, method: str, request: Any, context: Any, code: str, message: str
                ) -> None:
        try:
            if code == OK:  # returned, but perhaps with a status set on the context
                code, message = _status(context, None)
            entry = audit_entry(method, request, _caller(context), code, message)
        except Exception:
            log.exception("could not build the audit event of a %s call", method)
            return
        task = asyncio.get_running_loop().create_task(self._write(entry, self._last),
                                                      name="audit-event")
        self._last = task
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, entry: AuditEntry, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])
        try:
            await self._sink.emit(str(EventType.AUDIT), entry.message, **entry.fields)
            self.recorded += 1
        except Exception as exc:  # the audit trail must never fail or slow the call
            log.warning("could not record the audit event %r: %s", entry.message, exc)

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for audit events still being written (shutdown)."""
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._pending, return_exceptions=True),
                                       timeout)


def _caller(context: Any) -> Caller:
    peer = str(_call(context, "peer") or "")
    admitted = caller_identity()
    if admitted is not None:
        return Caller(peer=peer, identity=str(admitted), verified=True)
    return Caller(peer=peer, identity=_claimed(context))


def _claimed(context: Any) -> str:
    """The identity the client certificate names, unchecked ('' without one)."""
    auth = _call(context, "auth_context") or {}
    pems = auth.get(PEER_CERT_KEY) or []
    if not pems:
        return ""
    try:
        identity = certificate_identity(load_certificate(pems[0], "the peer certificate"))
    except Exception:  # a certificate authz refuses; the audit keeps the peer address
        return ""
    return str(identity) if identity is not None else ""


_DEADLINE_SLACK = 0.25  # seconds


def _cancelled(context: Any) -> tuple[str, str]:
    """How a call that ended without an answer ended: its deadline ran out (the client's
    DEADLINE_EXCEEDED) or the client went away. The client gives up at its deadline and
    resets the stream a little before this side's own copy of the deadline runs out, hence
    the slack."""
    try:
        remaining = context.time_remaining()
    except Exception:
        remaining = None
    if remaining is not None and remaining <= _DEADLINE_SLACK:
        return grpc.StatusCode.DEADLINE_EXCEEDED.name, "the call's deadline ran out"
    return grpc.StatusCode.CANCELLED.name, "the call was cancelled"
