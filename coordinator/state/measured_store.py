"""A ``Store`` that times every etcd request and counts the ones that failed.

It wraps the one door to etcd (``EtcdStore``), so every request is measured in one place.
A compare that lost (``Conflict``), a lost lead (``NotLeader``), a compacted watch or a
change too big for a transaction is etcd answering, not failing: only an unreachable or
refusing etcd (``Unavailable``) and unexpected errors count as failures.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from common.errors import LandlordError, Unavailable
from coordinator.state.store import Change, Entry, Fence, Store, Txn

__all__ = ["EtcdObserver", "MeasuredStore", "is_failure"]

T = TypeVar("T")


class EtcdObserver(Protocol):
    """Where request timings go (``coordinator.metrics.CoordinatorMetrics``)."""

    def observe_etcd(self, operation: str, seconds: float | None, failed: bool) -> None:
        """``seconds`` None: a request without a duration (a watch that broke)."""


def is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means etcd could not answer (as opposed to answering no)."""
    return isinstance(exc, Unavailable) or not isinstance(exc, LandlordError)


class MeasuredStore:
    """``Store`` around ``inner``; other attributes (``compact``, ``endpoint``) pass through."""

    def __init__(self, inner: Store, observer: EtcdObserver,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.max_txn_ops = inner.max_txn_ops
        self._observer = observer
        self._monotonic = monotonic

    async def _timed(self, operation: str, request: Awaitable[T]) -> T:
        started = self._monotonic()
        try:
            result = await request
        except BaseException as exc:
            self._observer.observe_etcd(operation, self._monotonic() - started,
                                        is_failure(exc))
            raise
        self._observer.observe_etcd(operation, self._monotonic() - started, False)
        return result

    async def get(self, key: str) -> Entry | None:
        return await self._timed("get", self.inner.get(key))

    async def list_prefix(self, prefix: str) -> tuple[list[Entry], int]:
        return await self._timed("list", self.inner.list_prefix(prefix))

    async def commit(self, txn: Txn, fence: Fence | None = None) -> int:
        return await self._timed("commit", self.inner.commit(txn, fence))

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Change]:
        """Changes pass through untimed (a watch is open for hours); a broken watch counts
        as one failed ``watch`` request."""
        try:
            async for change in self.inner.watch(prefix, start_revision):
                yield change
        except Exception as exc:
            self._observer.observe_etcd("watch", None, is_failure(exc))
            raise

    async def grant_lease(self, ttl: int) -> int:
        return await self._timed("lease_grant", self.inner.grant_lease(ttl))

    async def refresh_lease(self, lease_id: int) -> int:
        return await self._timed("lease_refresh", self.inner.refresh_lease(lease_id))

    async def revoke_lease(self, lease_id: int) -> None:
        await self._timed("lease_revoke", self.inner.revoke_lease(lease_id))

    async def failover(self) -> None:
        await self.inner.failover()

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
