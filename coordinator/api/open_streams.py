"""Streams open under a client certificate, and ending those a reload no longer trusts.

A certificate is checked when a call starts (coordinator/api/authz_interceptor.py); a
stream (an agent's Session, WatchRollout, StreamEvents) then lives on. ``OpenStreams``
keeps each open stream's peer certificate; after the coordinator reloads its CA bundle
and CRL (SIGHUP, ``Coordinator.reload_trust``) ``recheck`` checks them all again with
``common.pki_check.check_peer``, and every stream whose certificate is now revoked,
expired or no longer issued by a trusted CA is ended with UNAUTHENTICATED and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import grpc

from common.identity import Identity
from common.pki_check import Refusal, Trust, check_peer

__all__ = ["OpenStream", "OpenStreams"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class OpenStream:
    """One streaming call admitted under ``identity``'s certificate ``pem``, served by
    ``task`` (the call's task, which ``end`` cancels)."""

    method: str
    peer: str
    identity: Identity
    pem: bytes | str
    task: asyncio.Task[Any] | None
    refusal: Refusal | None = None

    def end(self, refusal: Refusal) -> None:
        if self.refusal is None:
            self.refusal = refusal
            if self.task is not None:
                self.task.cancel()

    @property
    def message(self) -> str:
        return f"{self.method} ended: {self.refusal} (its certificate is no longer trusted)"


class OpenStreams:
    def __init__(self) -> None:
        self._open: set[OpenStream] = set()

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[OpenStream]:
        return iter(list(self._open))

    def recheck(self, trust: Trust, now: datetime) -> list[OpenStream]:
        """Check every open stream's certificate against ``trust``; end (and return) those
        refused now."""
        ended = []
        for stream in list(self._open):
            checked = check_peer(stream.pem, trust, now)
            if isinstance(checked, Refusal):
                log.warning("ending stream %s of %s (peer %s): %s", stream.method,
                            stream.identity, stream.peer, checked)
                stream.end(checked)
                ended.append(stream)
        return ended

    async def guard(self, context: Any, method: str, identity: Identity, pem: bytes | str,
                    items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items`` for as long as the certificate stays trusted.

        A refused stream's task is cancelled: while it waits for its next item (the usual
        case) the behavior gets CancelledError (its ``finally`` runs) and the call ends
        UNAUTHENTICATED with the reason. While a send is stuck (a client that does not read)
        the cancellation ends the call there. No task per item: the items flow as fast as
        without the guard.
        """
        stream = OpenStream(method, context.peer(), identity, pem, asyncio.current_task())
        self._open.add(stream)
        try:
            while stream.refusal is None:
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if stream.refusal is None or stream.task is None:
                        raise  # the client went away, or the server stops
                    stream.task.uncancel()
                    break
                yield item
        finally:
            self._open.discard(stream)
            closing = getattr(items, "aclose", None)
            if closing is not None:  # the behavior's finally, if it has not run yet
                with contextlib.suppress(Exception):
                    await closing()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, stream.message)
