"""The etcd side of a host: its record, and one liveness lease per connected host.

The host record is written at registration when something in it changed (compare-and-swap,
retried), marked lost when the leader declares the host lost, and deleted with everything
keyed by the host when a lost host is forgotten (coordinator/fleet/forgetter.py). The host's
``{p}/alive/{host_id}`` key hangs on its lease, so any coordinator sees who is alive
without a write per report. The leader grants the lease at registration (or takes over
the previous leader's), refreshes due leases of connected hosts every tick (a keepalive,
not a write), and revokes it when the host is declared lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace

from common.clock import Clock
from common.errors import Conflict, Unavailable
from coordinator.state.cluster_state import ClusterState, Versioned
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import HostHealth, HostRecord, encode
from coordinator.state.store import FENCE_OPS, Store, Txn

__all__ = ["HostRecords"]

log = logging.getLogger(__name__)

PARALLEL_REFRESHES = 256
"""Lease keepalives in flight at once. Each waits for turns of a busy leader's loop (about
100 ms at 150,000 instances), so with 32 the refreshes of 5,000 hosts took longer than a
lease lives: leases ran out and were granted again, 100-200 writes a second."""
ADOPTED_FIRST_REFRESH = (1.0, 4.0)
"""Seconds after a host registers within which the lease it already had is first refreshed
(spread, so a takeover's thousand registrations are not followed by one burst)."""


class HostRecords:
    def __init__(self, store: Store, writes: FencedWrites, layout: KeyLayout,
                 state: ClusterState, clock: Clock, lease_ttl: int) -> None:
        self._store = store
        self._writes = writes
        self._layout = layout
        self._state = state
        self._clock = clock
        self.lease_ttl = lease_ttl
        self._leases: dict[str, int] = {}
        self._refreshed: dict[str, float] = {}

    # -- records ---------------------------------------------------------------------------

    async def register(self, record: HostRecord) -> None:
        """Write the host's record over whatever is stored, keeping the stored cordon (the
        compare on the revision read makes a cordon written meanwhile retry, not vanish);
        the cache holds it after."""
        key = self._layout.host(record.host_id)

        async def attempt() -> int:
            current = self._state.hosts.get(record.host_id)
            kept = record.keeping_cordon(current.value if current else None)
            txn = Txn().require(key, current.mod_revision if current else 0)
            return await self._writes.commit(txn.put(key, encode(kept)))

        await self._writes.retry(attempt, f"registering host {record.host_id}",
                                 host=record.host_id)

    async def mark_lost(self, found: Versioned[HostRecord]) -> bool:
        """Record the host as lost and revoke its lease; False when that could not be
        written now (another change won, or etcd is away): the next tick tries again."""
        if not await self._mark(found, "lost"):
            return False
        await self.drop_lease(found.value.host_id)
        return True

    async def stamp_lost(self, found: Versioned[HostRecord]) -> bool:
        """Give a lost record without a lost time the current time (see mark_lost)."""
        return await self._mark(found, "stamped with its lost time")

    async def _mark(self, found: Versioned[HostRecord], what: str) -> bool:
        host_id = found.value.host_id
        lost = replace(found.value, status=HostHealth.LOST,
                       status_changed_at=self._clock.now())
        txn = Txn().require(self._layout.host(host_id), found.mod_revision)
        try:
            await self._writes.commit(txn.put(self._layout.host(host_id), encode(lost)))
        except (Conflict, Unavailable) as exc:
            log.warning("could not record host %s as %s yet: %s", host_id, what, exc)
            return False
        return True

    def removal(self, found: Versioned[HostRecord], status_ids: Iterable[str] = ()) -> Txn:
        """Delete the host's record and allocation ledger, each only as last read (a host
        registering again, or a placement on it, makes the change fail), its liveness key,
        and the status records ``status_ids``."""
        host_id = found.value.host_id
        txn = Txn().require(self._layout.host(host_id), found.mod_revision)
        txn.delete(self._layout.host(host_id)).delete(self._layout.alive(host_id))
        alloc = self._state.allocs.get(host_id)
        txn.require(self._layout.alloc(host_id), alloc.mod_revision if alloc else 0)
        if alloc is not None:
            txn.delete(self._layout.alloc(host_id))
        for iid in status_ids:
            txn.delete(self._layout.status(iid))
        return txn

    async def forget(self, found: Versioned[HostRecord], status_ids: Sequence[str],
                     extra: Txn) -> None:
        """Commit the host's ``removal`` together with ``extra`` (its event), then revoke
        the lease it had; raises Conflict, Unavailable or NotLeader as the commit does.
        Status records too many for that one transaction are deleted first, in
        transactions of their own (they belong to instances that no longer exist)."""
        host_id = found.value.host_id
        # the lease as it was: a registration that slips in after the commit has its own
        lease = self._leases.get(host_id, 0) or self._state.alive.get(host_id, 0)
        limit = self._writes.max_txn_ops - FENCE_OPS
        ids = list(status_ids)
        if self.removal(found, ids).size + extra.size > limit:
            for start in range(0, len(ids), limit):
                txn = Txn()
                for iid in ids[start : start + limit]:
                    txn.delete(self._layout.status(iid))
                await self._writes.commit(txn, wait=False)
            ids = []
        await self._writes.commit(self.removal(found, ids).extend(extra))
        if self._leases.get(host_id, 0) == lease:
            self._leases.pop(host_id, None)
            self._refreshed.pop(host_id, None)
        if lease:
            with contextlib.suppress(Unavailable):
                await self._store.revoke_lease(lease)

    # -- liveness leases -------------------------------------------------------------------

    async def ensure_lease(self, host_id: str) -> None:
        """The host's liveness key on a live lease: its known lease refreshed, or a new one."""
        lease = self._leases.get(host_id) or self._state.alive.get(host_id, 0)
        if not lease or await self._store.refresh_lease(lease) <= 0:
            lease = await self._store.grant_lease(self.lease_ttl)
            since = b'{"since":%d}' % int(self._clock.now())
            await self._writes.commit(Txn().put(self._layout.alive(host_id), since, lease),
                                      wait=False)
        self._leases[host_id] = lease
        self._refreshed[host_id] = self._clock.monotonic()

    def adopt_lease(self, host_id: str) -> bool:
        """Keep the lease the host's liveness key hangs on (the previous leader's after a
        takeover, or this leader's from the host's last stream) without an etcd round trip
        at registration: the liveness tick refreshes it, first within
        ``ADOPTED_FIRST_REFRESH`` (an expired one is replaced then). False when there is
        none, or this leader's may have run out meanwhile (``ensure_lease`` then)."""
        now = self._clock.monotonic()
        if host_id in self._leases:
            return now - self._refreshed.get(host_id, 0.0) < self.lease_ttl / 2
        lease = self._state.alive.get(host_id, 0)
        if not lease:
            return False
        self._leases[host_id] = lease
        self._refreshed[host_id] = (now - self.lease_ttl / 3
                                    + random.uniform(*ADOPTED_FIRST_REFRESH))
        return True

    async def refresh_leases(self, connected: Iterable[str]) -> None:
        """Refresh the due leases of ``connected`` hosts (a keepalive, not a write),
        ``PARALLEL_REFRESHES`` at a time; a lease that expired is replaced.

        One etcd keepalive stream per lease: batching many leases on one stream was tried
        and is slower on a busy leader (each request and answer waits for a turn of the
        event loop, in sequence). The workers take the next due host from one iterator, so
        thousands of due hosts are not thousands of tasks queued on a semaphore (that
        queue was most of the refresh's cost at 5,000 hosts)."""
        due_after = self.lease_ttl / 3
        now = self._clock.monotonic()
        hosts = [h for h in connected
                 if h in self._leases and now - self._refreshed.get(h, 0) >= due_after]
        due = iter(hosts)

        async def worker() -> None:
            for host_id in due:
                lease = self._leases.get(host_id)
                if not lease:
                    continue  # dropped meanwhile
                try:
                    if await self._store.refresh_lease(lease) > 0:
                        self._refreshed[host_id] = now
                    elif self._leases.get(host_id) == lease:
                        self._leases.pop(host_id, None)
                        await self.ensure_lease(host_id)
                except Unavailable as exc:
                    log.warning("lease refresh for %s failed: %s", host_id, exc)

        await asyncio.gather(*(worker() for _ in range(min(len(hosts), PARALLEL_REFRESHES))))

    async def drop_lease(self, host_id: str) -> None:
        """Revoke the host's lease (its liveness key goes with it)."""
        lease = self._leases.pop(host_id, 0) or self._state.alive.get(host_id, 0)
        self._refreshed.pop(host_id, None)
        if lease:
            with contextlib.suppress(Unavailable):
                await self._store.revoke_lease(lease)
