"""The status a grpc.aio call ended with, read from its servicer context: one reading for
the interceptors that record calls (audit events, admin call metrics)."""

from __future__ import annotations

import asyncio
import math
from contextvars import ContextVar
from typing import Any

import grpc

from coordinator.api.audit import OK

__all__ = ["STOPPED_AT", "call_status", "cancelled_code", "context_call"]

STOPPED_AT: ContextVar[float] = ContextVar("stopped_at", default=math.inf)
"""When (the event loop's clock) the call limits stop the call running in this context at
its ``call_deadline`` (coordinator/api/call_limits.py sets it around the call)."""


def call_status(context: Any, exc: BaseException | None) -> tuple[str, str]:
    """The status the call ends with: what the context was given, else what ``exc`` means
    (``OK`` when it returned without one)."""
    code = context_call(context, "code")
    if isinstance(code, grpc.StatusCode):
        return code.name, str(context_call(context, "details") or "")
    if exc is None:
        return OK, ""
    return grpc.StatusCode.UNKNOWN.name, f"{type(exc).__name__}: {exc}"


def context_call(context: Any, name: str) -> Any:
    """``context.<name>()``, or None when this context has no such accessor."""
    accessor = getattr(context, name, None)
    if accessor is None:
        return None
    try:
        return accessor()
    except Exception:
        return None


def cancelled_code() -> str:
    """The status of a call that ended by cancellation: DEADLINE_EXCEEDED when the call
    limits stopped it at its deadline (what the client is answered), else CANCELLED."""
    stopped = asyncio.get_running_loop().time() >= STOPPED_AT.get()
    return str(grpc.StatusCode.DEADLINE_EXCEEDED.name if stopped
               else grpc.StatusCode.CANCELLED.name)
