"""Leader election through etcd: one lease and one create-if-absent transaction.

Campaign: grant a lease, then put the leader key with it only if the key does not exist.
The winner refreshes the lease every TTL/3 and holds a ``Fence`` (the key's create revision
and value) that guards every write it makes. It steps down when a refresh reports the lease
expired, or when no refresh has succeeded for most of a TTL (etcd unreachable): by then
another coordinator may be about to win. Losers wait for the key to go away and try again.
Resigning revokes the lease, which hands over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from common.errors import Conflict, Unavailable
from coordinator.errors import HistoryCompacted
from coordinator.state.etcd_client import BlockingLeaseClient
from coordinator.state.records import LeaderRecord
from coordinator.state.store import Fence, Store, Txn

__all__ = ["LeaderElection", "LeaseKeeper"]

log = logging.getLogger(__name__)

OnElected = Callable[[Fence], Coroutine[Any, Any, None]]


class LeaderElection:
    """Campaigns forever; runs ``lead(fence)`` while this coordinator leads."""

    def __init__(
        self,
        store: Store,
        key: str,
        me: LeaderRecord,
        ttl: int = 5,
        retry: float = 0.5,
        keeper_client: Callable[[], BlockingLeaseClient] | None = None,
        refusal: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        """``keeper_client``: makes a blocking etcd client for a LeaseKeeper thread, so a
        busy event loop cannot lose the lead; None refreshes on this loop. ``refusal``:
        why this coordinator must not campaign now ("" when it may), asked before every
        campaign (a cluster of a newer schema)."""
        self._refusal = refusal
        self._store = store
        self._keeper_client = keeper_client
        self._key = key
        self._me = me
        self._value = json.dumps({"id": me.id, "address": me.address}, sort_keys=True).encode()
        self._ttl = ttl
        self._retry = retry
        self.fence: Fence | None = None
        self._lease = 0
        self._resigning = False
        self.terms = 0

    @property
    def is_leader(self) -> bool:
        return self.fence is not None

    async def run(self, lead: OnElected) -> None:
        """Campaign, lead while elected, and campaign again after losing the lead."""
        failing = False
        refused = ""
        while not self._resigning:
            reason = await self._refusal() if self._refusal is not None else ""
            if reason:
                if reason != refused:  # said once, not every retry
                    log.error("election: not campaigning: %s", reason)
                refused = reason
                await asyncio.sleep(self._retry)
                continue
            refused = ""
            try:
                fence = await self._campaign()
            except (Unavailable, Conflict, HistoryCompacted) as exc:
                # say it once per outage, not every retry
                log.log(logging.DEBUG if failing else logging.WARNING,
                        "election: cannot campaign now: %s", exc)
                failing = True
                await asyncio.sleep(self._retry)
                continue
            except Exception:  # a bug must not end the campaign for good
                log.exception("election: campaign failed")
                await asyncio.sleep(self._retry)
                continue
            failing = False
            if fence is None:
                await asyncio.sleep(self._retry)
                continue
            self.fence = fence
            self.terms += 1
            log.info("election: %s leads (term %d, fence %d)", self._me.id, self.terms,
                     fence.create_revision)
            leading = asyncio.create_task(lead(fence), name="leader-duties")
            try:
                await self._keep_lease(leading)
            finally:
                self.fence = None
                leading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await leading
                lease, self._lease = self._lease, 0
                if lease:
                    # let the next leader in now rather than after the TTL
                    with contextlib.suppress(Unavailable):
                        await self._store.revoke_lease(lease)
                log.warning("election: %s stepped down", self._me.id)

    async def _campaign(self) -> Fence | None:
        lease = await self._store.grant_lease(self._ttl)
        txn = Txn().require(self._key, 0).put(self._key, self._value, lease)
        try:
            await self._store.commit(txn)
        except Conflict:
            await self._store.revoke_lease(lease)
            await self._wait_for_vacancy()
            return None
        except Unavailable:
            with contextlib.suppress(Unavailable):
                await self._store.revoke_lease(lease)
            raise
        found = await self._store.get(self._key)
        if found is None or found.value != self._value or found.lease != lease:
            return None
        self._lease = lease
        return Fence(self._key, found.create_revision, self._value)

    async def _wait_for_vacancy(self) -> None:
        """Until the leader key is gone (or a TTL passes, to re-check)."""
        current = await self._store.get(self._key)
        if current is None:
            return
        with contextlib.suppress(TimeoutError, Unavailable):
            async with asyncio.timeout(self._ttl):
                async for change in self._store.watch(self._key, current.mod_revision + 1):
                    if change.kind == "delete" and change.entry.key == self._key:
                        return

    async def _keep_lease(self, leading: asyncio.Task[None]) -> None:
        if self._keeper_client is not None:
            await self._keep_lease_in_thread(leading, self._keeper_client)
            return
        interval = self._ttl / 3
        last_ok = time.monotonic()
        while not leading.done() and not self._resigning:
            await asyncio.sleep(interval if time.monotonic() - last_ok < interval else 0.2)
            try:
                remaining = await self._store.refresh_lease(self._lease)
            except Unavailable as exc:
                if time.monotonic() - last_ok > self._ttl * 0.7:
                    log.error("election: no lease refresh for %.1fs (%s)",
                              time.monotonic() - last_ok, exc)
                    return
                continue
            if remaining <= 0:
                log.error("election: the leader lease expired")
                return
            last_ok = time.monotonic()
        if leading.done() and not leading.cancelled() and leading.exception() is not None:
            log.error("election: leader duties failed", exc_info=leading.exception())

    async def _keep_lease_in_thread(self, leading: asyncio.Task[None],
                                    make_client: Callable[[], BlockingLeaseClient]) -> None:
        keeper = LeaseKeeper(make_client, self._lease, self._ttl)
        keeper.start()
        try:
            while not leading.done() and not self._resigning and not keeper.lost.is_set():
                keeper.beat()
                await asyncio.sleep(0.2)
        finally:
            await asyncio.to_thread(keeper.stop)
        if leading.done() and not leading.cancelled() and leading.exception() is not None:
            log.error("election: leader duties failed", exc_info=leading.exception())

    async def resign(self) -> None:
        """Stop campaigning and give the lead away now (revoke the lease)."""
        self._resigning = True
        lease, self._lease = self._lease, 0
        self.fence = None
        if lease:
            with contextlib.suppress(Unavailable):
                await self._store.revoke_lease(lease)


class LeaseKeeper:
    """Refreshes the leader lease from a thread of its own, with a blocking etcd client.

    A leader whose event loop is busy (thousands of agent reports) must not lose the lead
    for that alone: followers would face the same load and agents would reconnect in a
    storm. The keeper gives up, and ``lost`` is set, when etcd reports the lease expired,
    when no refresh succeeded for most of a TTL, or when the main loop has not beaten for
    ``STALL_TTLS`` TTLs (a wedged process must still hand over).
    """

    STALL_TTLS = 3

    def __init__(self, make_client: Callable[[], BlockingLeaseClient], lease: int,
                 ttl: int) -> None:
        self._make_client = make_client
        self._lease = lease
        self._ttl = ttl
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._beat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def beat(self) -> None:
        """The main loop is alive (called from it)."""
        self._beat = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._ttl)

    def _run(self) -> None:
        client = self._make_client()
        interval = self._ttl / 3
        last_ok = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now - self._beat > self.STALL_TTLS * self._ttl:
                    log.error("election: the event loop stalled for %.1fs; giving up the lead",
                              now - self._beat)
                    return
                try:
                    remaining = client.refresh(self._lease)
                except Unavailable as exc:
                    if time.monotonic() - last_ok > self._ttl * 0.7:
                        log.error("election: no lease refresh for %.1fs (%s)",
                                  time.monotonic() - last_ok, exc)
                        return
                    self._stop.wait(0.2)
                    continue
                if remaining <= 0:
                    log.error("election: the leader lease expired")
                    return
                last_ok = time.monotonic()
                self._stop.wait(interval)
        except Exception:  # reported as a lost lease; the main loop steps down
            log.exception("election: lease keeper failed")
        finally:
            client.close()
            self.lost.set()
