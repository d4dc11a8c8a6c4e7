"""Landlord errors -> gRPC status at the servicer boundary.

``LandlordError.code`` names the status (``grpc.StatusCode[err.code]``); ``NotLeader`` also
carries an ``x-leader`` trailer with the leader's address. Anything else is a bug: it is
logged with its traceback and the caller sees INTERNAL without the details.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from common.errors import InvalidArgument, LandlordError
from common.input_bounds import MAX_ADMIN_REQUEST_BYTES
from coordinator.errors import NotLeader

__all__ = ["LEADER_TRAILER", "MAX_STATUS_TEXT", "abort_with", "check_request_size", "status_text",
           "stream_boundary", "unary_boundary"]

log = logging.getLogger(__name__)

LEADER_TRAILER = "x-leader"
MAX_STATUS_TEXT = 2048
"""Characters of a status message: error texts quote short prefixes of inputs already;
this cut keeps any other long text (a list of hosts, say) far below grpc's 8 KiB metadata
limit, past which the caller would see RESOURCE_EXHAUSTED instead of the real error."""
R = TypeVar("R")


def status_of(exc: LandlordError) -> grpc.StatusCode:
    try:
        return grpc.StatusCode[exc.code]
    except KeyError:
        return grpc.StatusCode.UNKNOWN


def status_text(exc: LandlordError) -> str:
    """The error's message, cut to ``MAX_STATUS_TEXT`` characters."""
    text = str(exc)
    if len(text) <= MAX_STATUS_TEXT:
        return text
    return f"{text[:MAX_STATUS_TEXT]}... ({len(text)} characters in all)"


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """Abort the call with the status ``exc`` stands for (raises, never returns)."""
    if isinstance(exc, NotLeader):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, status_text(exc),
                            trailing_metadata=((LEADER_TRAILER, exc.leader_address),))
    if isinstance(exc, LandlordError):
        await context.abort(status_of(exc), status_text(exc))
    log.error("unexpected error in an RPC", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the coordinator log")


def check_request_size(request: Any) -> None:
    """Refuse a request message past ``MAX_ADMIN_REQUEST_BYTES`` with INVALID_ARGUMENT. The
    coordinator's server has that receive limit, so over gRPC grpc refuses such a message
    first (RESOURCE_EXHAUSTED, from its length prefix); this holds for a servicer called
    another way."""
    size = request.ByteSize() if hasattr(request, "ByteSize") else 0
    if size > MAX_ADMIN_REQUEST_BYTES:
        raise InvalidArgument(f"the request holds {size} bytes; the admin API takes at most "
                              f"{MAX_ADMIN_REQUEST_BYTES}", field="request")


def unary_boundary(
    method: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            check_request_size(request)
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_with(context, exc)
            raise  # unreachable: abort raised

    return wrapper


def stream_boundary(
    method: Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[R]],
) -> Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[R]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[R]:
        try:
            check_request_size(request)
            async for item in method(self, request, context):
                yield item
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_with(context, exc)

    return wrapper
