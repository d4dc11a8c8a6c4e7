"""What a grpc.aio servicer behavior returns, made uniform for the interceptors that wrap
behaviors: a value or an awaitable (unary responses), an async or plain iterable, or an
awaitable when it writes through the context (streamed responses)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["awaited", "items"]


async def awaited(result: Any) -> Any:
    """A unary behavior's response, whether it returned it or an awaitable of it."""
    return await result if inspect.isawaitable(result) else result


async def items(result: Any) -> AsyncIterator[Any]:
    """Items of a streaming behavior, whether it yields or writes through the context."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result
    else:
        for item in result or ():
            yield item
