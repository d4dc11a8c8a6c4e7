"""The leader's writes to etcd: each one fenced, and compare-and-swap retried one way.

Every write of the leader goes through ``FencedWrites.commit``: the transaction carries the
leader's fence (a deposed leader cannot write) and, unless told otherwise, returns only once
the watch-fed cache holds the change, so the next decision reads what was just written.

A compare-and-swap that loses (``Conflict``) is decided again from a fresher cache:
``retry_on_conflict`` runs the attempt up to ``CAS_ATTEMPTS`` times, waiting between tries
until the cache has caught up with the write that won, and raises ``Conflict`` naming what
kept conflicting when every attempt lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
)

from common.errors import Conflict
from coordinator.state.store import Fence, Store, Txn

__all__ = ["CAS_ATTEMPTS", "CacheWait", "Fenced", "FencedWrites", "retry_on_conflict"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CAS_ATTEMPTS = 5
"""Tries of one compare-and-swap decision before the caller is told to retry."""
CATCH_UP_TIMEOUT = 30.0
"""Seconds to wait for the cache to reach the revision of the write that won."""
NO_REVISION_PAUSE = 0.1
"""Pause before deciding again when the conflict did not say which revision won."""


class Fenced(Protocol):
    """Who may write: the leader's fence (raises NotLeader on a follower)."""

    @property
    def fence(self) -> Fence: ...


class CacheWait(Protocol):
    """The watch-fed cache, as far as waiting for a revision goes (coordinator/state/view.py)."""

    async def wait_for(self, revision: int, timeout: float = 10.0) -> None: ...


async def retry_on_conflict(
    attempt: Callable[[], Awaitable[T]],
    catch_up: Callable[[Conflict], Awaitable[None]],
    what: str,
    **context: object,
) -> T:
    """``attempt()`` again after each Conflict (``catch_up`` between tries), at most
    ``CAS_ATTEMPTS`` times; then Conflict("<what> kept conflicting ...").

    The first try runs before any retry machinery is built: nearly every write succeeds
    at once, and a tenacity ``AsyncRetrying`` per write was 3-5 % of a leader placing
    thousands of instances a minute."""

    async def caught_up(error: Conflict, number: int) -> None:
        log.info("%s lost a compare-and-swap (attempt %d of %d); deciding again", what,
                 number, CAS_ATTEMPTS)
        await catch_up(error)

    try:
        return await attempt()
    except Conflict as error:
        await caught_up(error, 1)

    async def before_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, Conflict):
            await caught_up(error, state.attempt_number + 1)

    async def run() -> T:
        # tenacity awaits only what it sees is a coroutine function; ``attempt`` may be a
        # plain callable (a lambda) that returns an awaitable.
        return await attempt()

    retrying = AsyncRetrying(
        stop=stop_after_attempt(CAS_ATTEMPTS - 1),
        retry=retry_if_exception_type(Conflict),
        before_sleep=before_retry,
    )
    try:
        return await retrying(run)
    except RetryError as exc:
        raise Conflict(
            f"{what} kept conflicting with other changes ({CAS_ATTEMPTS} attempts); retry",
            attempts=CAS_ATTEMPTS, **context,
        ) from exc.last_attempt.exception()


class FencedWrites:
    """Fenced commits that wait for the cache, and the compare-and-swap retry around them."""

    def __init__(self, store: Store, leadership: Fenced, view: CacheWait) -> None:
        self._store = store
        self._leadership = leadership
        self._view = view

    @property
    def max_txn_ops(self) -> int:
        return self._store.max_txn_ops

    def require_lead(self) -> None:
        """Raise NotLeader unless this coordinator leads (before deciding anything)."""
        self._leadership.fence  # noqa: B018

    async def commit(self, txn: Txn, wait: bool = True) -> int:
        """Commit ``txn`` under the leader's fence; with ``wait``, return once the cache
        holds it. Returns the new revision; raises Conflict or NotLeader."""
        revision = await self._store.commit(txn, self._leadership.fence)
        if wait:
            await self._view.wait_for(revision)
        return revision

    async def wait_for_revision(self, revision: int) -> None:
        """Return once the cache holds changes up to ``revision`` (this coordinator's own
        write, committed without waiting); Unavailable if it lags past CATCH_UP_TIMEOUT."""
        if revision:
            await self._view.wait_for(revision, timeout=CATCH_UP_TIMEOUT)

    async def catch_up(self, conflict: Conflict) -> None:
        """After a lost compare-and-swap: wait until the cache has what made it fail."""
        revision = conflict.context.get("revision")
        if isinstance(revision, int) and revision:
            await self._view.wait_for(revision, timeout=CATCH_UP_TIMEOUT)
        else:
            await asyncio.sleep(NO_REVISION_PAUSE)

    async def retry(self, attempt: Callable[[], Awaitable[T]], what: str,
                    **context: object) -> T:
        """``retry_on_conflict`` with this cache's catch-up."""
        return await retry_on_conflict(attempt, self.catch_up, what, **context)
