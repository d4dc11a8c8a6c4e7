"""A watch-fed cache of every key under the cluster prefix.

One list, then one watch from the list's revision + 1. After a disconnect the watch resumes
from the last revision seen, so no change is missed; when etcd has compacted that history
the cache lists everything again and hands listeners the difference, as if they had
watched it happen. Every coordinator (leader or follower) reads the cluster from here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from common.errors import Unavailable
from coordinator.errors import HistoryCompacted
from coordinator.state.store import Change, Entry, Store

__all__ = ["ClusterView", "Listener"]

log = logging.getLogger(__name__)

Listener = Callable[[Change], None]
"""Called synchronously for each change, in revision order; must not block."""


class ClusterView:
    """Every key under ``prefix`` with its revisions, current as of ``revision``."""

    def __init__(self, store: Store, prefix: str, retry_max: float = 2.0) -> None:
        self._store = store
        self._prefix = prefix
        self._retry_max = retry_max
        self.entries: dict[str, Entry] = {}
        self.revision = 0
        self._listeners: list[Listener] = []
        self._advanced = asyncio.Condition()
        self.synced = asyncio.Event()
        """Set after the first full list; cleared while etcd cannot be watched."""
        self.relists = 0
        self.resumes = 0

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def run(self) -> None:
        """List, then watch, forever; returns only when cancelled."""
        need_list = self.revision == 0
        delay, failing = 0.1, False
        while True:
            try:
                if need_list:
                    entries, revision = await self._store.list_prefix(self._prefix)
                    self._replace_all(entries, revision)
                    need_list = False
                    await self._notify()
                else:
                    self.resumes += 1
                self.synced.set()
                async for change in self._store.watch(self._prefix, self.revision + 1):
                    self._apply(change)
                    delay, failing = 0.1, False
                    await self._notify()
            except HistoryCompacted as exc:
                log.warning("etcd watch: %s; listing again", exc)
                self.relists += 1
                need_list = True
            except Unavailable as exc:
                if not failing:
                    log.warning("etcd watch lost at revision %d: %s", self.revision, exc)
                failing = True
                self.synced.clear()
                await self._store.failover()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    async def wait_for(self, revision: int, timeout: float = 10.0) -> None:
        """Return once changes up to ``revision`` are in the cache (Unavailable if it lags)."""
        try:
            async with asyncio.timeout(timeout), self._advanced:
                await self._advanced.wait_for(lambda: self.revision >= revision)
        except TimeoutError:
            raise Unavailable(
                f"the etcd watch is behind: revision {revision} not seen within {timeout}s "
                f"(at {self.revision}); the change is stored, retry the read",
                revision=revision,
            ) from None

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def _apply(self, change: Change) -> None:
        if change.kind == "put":
            self.entries[change.entry.key] = change.entry
        else:
            self.entries.pop(change.entry.key, None)
        self.revision = max(self.revision, change.entry.mod_revision)
        self._emit(change)

    def _replace_all(self, entries: list[Entry], revision: int) -> None:
        fresh = {e.key: e for e in entries}
        for key in sorted(set(self.entries) - set(fresh)):
            gone = self.entries.pop(key)
            self._emit(Change("delete", Entry(key, b"", gone.create_revision, revision)))
        for key, entry in sorted(fresh.items(), key=lambda kv: kv[1].mod_revision):
            old = self.entries.get(key)
            if old is None or old.mod_revision != entry.mod_revision:
                self.entries[key] = entry
                self._emit(Change("put", entry))
        self.revision = max(self.revision, revision)

    def _emit(self, change: Change) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # one broken listener must not stop the cache
                log.exception("cluster view listener failed on %s", change.entry.key)

    async def _notify(self) -> None:
        async with self._advanced:
            self._advanced.notify_all()
