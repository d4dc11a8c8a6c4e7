"""A grpc.aio server interceptor that counts admin calls by method and final status, and
times them.

Placed first (outermost), before the audit and authz interceptors, so it also counts the
calls authz refuses. Streaming calls (WatchRollout, StreamEvents) are counted when the
stream ends; their duration is how long the client watched.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc

from common.gen.landlord.v1 import admin_pb2
from coordinator.api.audit import OK
from coordinator.api.call_status import call_status, cancelled_code

__all__ = ["ADMIN_PREFIX", "CallMetricsInterceptor", "CallObserver"]

ADMIN_PREFIX = f"/{admin_pb2.DESCRIPTOR.services_by_name['Admin'].full_name}/"
_CANCELLED = grpc.StatusCode.CANCELLED.name


class CallObserver(Protocol):
    """Where finished calls are counted (``coordinator.metrics.CoordinatorMetrics``)."""

    def observe_call(self, method: str, code: str, seconds: float) -> None: ...


class CallMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, observer: CallObserver,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._observer = observer
        self._monotonic = monotonic

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(ADMIN_PREFIX):
            return handler
        method = details.method[len(ADMIN_PREFIX):]
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler

    def _unary(self, method: str, inner: Any) -> Any:
        async def measured(request: Any, context: Any) -> Any:
            started, code = self._monotonic(), OK
            try:
                response = inner(request, context)
                return await response if inspect.isawaitable(response) else response
            except asyncio.CancelledError:
                code = cancelled_code()  # stopped at call_deadline: DEADLINE_EXCEEDED
                raise
            except BaseException as exc:
                code = call_status(context, exc)[0]
                raise
            finally:
                self._finish(method, context, code, started)

        return measured

    def _streaming(self, method: str, inner: Any) -> Any:
        async def measured(request: Any, context: Any) -> AsyncIterator[Any]:
            started, code = self._monotonic(), OK
            try:
                result = inner(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    await result
            except (asyncio.CancelledError, GeneratorExit):
                code = _CANCELLED
                raise
            except BaseException as exc:
                code = call_status(context, exc)[0]
                raise
            finally:
                self._finish(method, context, code, started)

        return measured

    def _finish(self, method: str, context: Any, code: str, started: float) -> None:
        if code == OK:  # returned, but perhaps with a status set on the context
            code = call_status(context, None)[0]
        self._observer.observe_call(method, code, self._monotonic() - started)
