"""The status a grpc.aio call ended with, read from its servicer context: one reading for
the interceptors that record calls (audit events, admin call metrics)."""

from __future__ import annotations

from typing import Any

import grpc

from coordinator.api.audit import OK

__all__ = ["call_status", "context_call"]


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
