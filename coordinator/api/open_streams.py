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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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
    """One streaming call admitted under ``identity``'s certificate ``pem``."""

    method: str
    peer: str
    identity: Identity
    pem: bytes | str
    refusal: Refusal | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self, refusal: Refusal) -> None:
        self.refusal = refusal
        self.ended.set()

    @property
    def message(self) -> str:
        return f"{self.method} ended: {self.refusal} (after the coordinator reloaded its CA " \
               "bundle and CRL)"


class OpenStreams:
    def __init__(self) -> None:
        self._open: set[OpenStream] = set()

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Any:
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
        """``items`` for as long as the certificate stays trusted; then the stream's
        behavior is cancelled (its ``finally`` runs) and the call ends UNAUTHENTICATED."""
        stream = OpenStream(method, context.peer(), identity, pem)
        self._open.add(stream)
        ended = asyncio.ensure_future(stream.ended.wait())
        step: asyncio.Future[T] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(items))
                await asyncio.wait({step, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    break
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                step = None
                yield item
        finally:
            self._open.discard(stream)
            ended.cancel()
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await step
            closing = getattr(items, "aclose", None)
            if closing is not None:  # runs the behavior's finally if the step never started
                with contextlib.suppress(Exception):
                    await closing()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, stream.message)
