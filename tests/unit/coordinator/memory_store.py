"""An in-memory Store for unit tests: compare-and-swap like etcd, each commit fed straight
into a ClusterState (so the 'cache' is always current), and every commit recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from common.errors import Conflict
from coordinator.state.cluster_state import ClusterState
from coordinator.state.store import FENCE_OPS, Change, Entry, Fence, Txn


class MemoryStore:
    max_txn_ops = 128

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.entries: dict[str, Entry] = {}
        self.revision = 0
        self.commits: list[Txn] = []
        self.before_commit: Callable[[], None] | None = None
        """Runs before each commit is checked (a concurrent writer, in tests)."""
        self.held: list[Change] | None = None
        """When a list: commits' changes wait here until ``deliver`` (a watch that lags)."""

    def _feed(self, change: Change) -> None:
        if self.held is None:
            self.state.apply(change)
        else:
            self.held.append(change)

    def deliver(self, revision: int) -> None:
        """Feed the held changes up to ``revision`` to the state, as the watch would."""
        assert self.held is not None
        while self.held and self.held[0].entry.mod_revision <= revision:
            self.state.apply(self.held.pop(0))

    def put(self, key: str, value: bytes) -> int:
        """Write directly, as another coordinator would; returns the revision."""
        self.revision += 1
        old = self.entries.get(key)
        entry = Entry(key, value, old.create_revision if old else self.revision, self.revision)
        self.entries[key] = entry
        self._feed(Change("put", entry))
        return self.revision

    async def commit(self, txn: Txn, fence: Fence | None = None) -> int:
        if self.before_commit is not None:
            self.before_commit()
        # etcd refuses a transaction past --max-txn-ops (EtcdStore checks it before sending)
        assert txn.size + (FENCE_OPS if fence else 0) <= self.max_txn_ops, txn.size
        for key, kind, revision in txn.compares:
            found = self.entries.get(key)
            if (found is not None) if kind == "absent" else (
                    found is None or found.mod_revision != revision):
                raise Conflict("compare failed", keys=[key], revision=self.revision)
        self.commits.append(txn)
        self.revision += 1
        for key, (value, lease) in txn.puts.items():
            old = self.entries.get(key)
            entry = Entry(key, value, old.create_revision if old else self.revision,
                          self.revision, lease)
            self.entries[key] = entry
            self._feed(Change("put", entry))
        for key in txn.deletes:
            gone = self.entries.pop(key, None)
            if gone is not None:
                self._feed(Change("delete", Entry(key, b"", gone.create_revision,
                                                  self.revision)))
        return self.revision

    async def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    async def list_prefix(self, prefix: str) -> tuple[list[Entry], int]:
        return [e for k, e in self.entries.items() if k.startswith(prefix)], self.revision

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Change]:
        raise AssertionError("nothing watches this store: the unit tests feed the state on commit")
        yield  # pragma: no cover

    async def grant_lease(self, ttl: int) -> int:
        return 1

    async def refresh_lease(self, lease_id: int) -> int:
        return 10

    async def revoke_lease(self, lease_id: int) -> None:
        return None

    async def failover(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Leading:
    """Leadership that always holds the fence."""

    fence = Fence("/landlord/leader", 1, b"me")


class CurrentCache:
    """The ClusterView stand-in: the state is fed on commit, so it is always current."""

    async def wait_for(self, revision: int, timeout: float = 10.0) -> None:
        return None


class LaggingCache:
    """The ClusterView stand-in over a store whose changes are held: a wait delivers them."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        store.held = []

    async def wait_for(self, revision: int, timeout: float = 10.0) -> None:
        self.store.deliver(revision)
