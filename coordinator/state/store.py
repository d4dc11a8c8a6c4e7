"""The coordinator's only door to etcd (through aetcd), and the transaction type it speaks.

The key layout is documented in ``coordinator/state/keys.py``. Rules kept here:

- Every multi-key change is one ``Txn``: compares on revisions (compare-and-swap), then
  puts and deletes that apply together or not at all, so a failed request leaves nothing
  half-written.
- The leader passes its ``Fence``: the transaction also requires that the leader key still
  has the leader's create revision and value, so a deposed leader can never write.
- aetcd errors become ``Unavailable`` (etcd unreachable), ``Conflict`` (a compare lost),
  ``NotLeader`` (the fence failed) or ``HistoryCompacted`` (a watch too far back).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aetcd
import aetcd.exceptions as etcd_errors
from aetcd import rpc

from common.errors import Conflict, InvalidArgument, Unavailable
from common.transport import TlsSettings
from coordinator.errors import HistoryCompacted, NotLeader
from coordinator.state.etcd_client import (
    CHANNEL_OPTIONS,
    blocking_channel,
    etcd_client,
    etcd_target,
)
from coordinator.state.watch_thread import watch_in_thread

__all__ = ["FENCE_OPS", "Change", "Entry", "EtcdStore", "Fence", "Store", "Txn"]

log = logging.getLogger(__name__)

MAX_TXN_OPS = 128
"""etcd's default --max-txn-ops: puts, deletes and compares are each one op. Batches of
events and statuses stay below it, and a deploy of many replicas is recorded in several
transactions (coordinator/fleet/placement_batches.py); a larger --max-txn-ops (with the
coordinator told, etcd_max_txn_ops) means fewer, larger transactions."""
FENCE_OPS = 2
"""Compares the leader's fence adds to each transaction."""


@dataclass(frozen=True)
class Entry:
    """One key as read or watched."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0
    """The lease the key is attached to (0: none; it lives until deleted)."""


@dataclass(frozen=True)
class Change:
    """One watched change. For a delete, ``entry.mod_revision`` is the deletion's revision."""

    kind: Literal["put", "delete"]
    entry: Entry


@dataclass(frozen=True)
class Fence:
    """Proof of leadership: the leader key as this coordinator created it."""

    key: str
    create_revision: int
    value: bytes


@dataclass
class Txn:
    """A multi-key change guarded by revisions; built by pure code, run by ``Store.commit``."""

    compares: list[tuple[str, Literal["mod", "absent"], int]] = field(default_factory=list)
    puts: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)

    def require(self, key: str, mod_revision: int) -> Txn:
        """The key must still be at ``mod_revision`` (0: must not exist)."""
        if mod_revision:
            self.compares.append((key, "mod", mod_revision))
        else:
            self.compares.append((key, "absent", 0))
        return self

    def put(self, key: str, value: bytes, lease: int = 0) -> Txn:
        self.puts[key] = (value, lease)
        return self

    def delete(self, key: str) -> Txn:
        self.deletes.append(key)
        return self

    def extend(self, other: Txn) -> Txn:
        self.compares.extend(other.compares)
        self.puts.update(other.puts)
        self.deletes.extend(other.deletes)
        return self

    @property
    def size(self) -> int:
        return len(self.compares) + len(self.puts) + len(self.deletes)

    @property
    def empty(self) -> bool:
        return not (self.puts or self.deletes)


class Store(Protocol):
    """What the coordinator needs from etcd."""

    max_txn_ops: int
    """Most operations (compares, puts, deletes) one transaction may hold."""

    async def get(self, key: str) -> Entry | None: ...

    async def list_prefix(self, prefix: str) -> tuple[list[Entry], int]:
        """Every key under ``prefix`` and the store revision of the read."""
        ...

    async def commit(self, txn: Txn, fence: Fence | None = None) -> int:
        """Apply ``txn`` atomically; return the new revision. Raises Conflict or NotLeader."""
        ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Change]:
        """Changes under ``prefix`` from ``start_revision`` (inclusive), in revision order."""
        ...

    async def grant_lease(self, ttl: int) -> int: ...

    async def refresh_lease(self, lease_id: int) -> int:
        """Refresh; return the remaining TTL (0: the lease has expired)."""
        ...

    async def revoke_lease(self, lease_id: int) -> None: ...

    async def failover(self) -> None:
        """The current endpoint failed: move to the next one (no-op with one endpoint)."""
        ...

    async def close(self) -> None: ...


def _entry(kv: Any) -> Entry:
    return Entry(
        key=kv.key.decode(),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        lease=int(kv.lease),
    )


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, etcd_errors.RevisionCompactedError):
        return HistoryCompacted(
            f"etcd compacted the history below revision {exc.compacted_revision}",
            exc.compacted_revision,
        )
    if isinstance(exc, etcd_errors.ConnectionFailedError | etcd_errors.ConnectionTimeoutError):
        return Unavailable(f"etcd is unreachable ({what}): {exc}", operation=what)
    if isinstance(exc, etcd_errors.ClientError):
        return Unavailable(f"etcd refused {what}: {exc}", operation=what)
    return exc


class EtcdStore:
    """``Store`` on a real etcd through aetcd; over TLS per ``tls`` (etcd_client.py)."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 5.0,
                 max_txn_ops: int = MAX_TXN_OPS, tls: TlsSettings | None = None) -> None:
        if not endpoints:
            raise InvalidArgument("at least one etcd endpoint is needed")
        self.max_txn_ops = max_txn_ops
        self._tls = tls or TlsSettings()
        self._targets = [etcd_target(e, self._tls) for e in endpoints]
        self._endpoints = list(endpoints)
        self._current = 0
        self._timeout = timeout
        self._client = self._make_client()

    def _make_client(self) -> aetcd.Client:
        return etcd_client(self._targets[self._current], self._tls, self._timeout,
                           CHANNEL_OPTIONS)

    @property
    def endpoint(self) -> str:
        return self._endpoints[self._current]

    async def failover(self) -> None:
        """Move to the next endpoint after a connection failure (no-op with one endpoint)."""
        if len(self._endpoints) == 1:
            return
        old = self._client
        self._current = (self._current + 1) % len(self._endpoints)
        self._client = self._make_client()
        log.warning("etcd: switching to endpoint %s", self.endpoint)
        try:
            await old.close()
        except Exception:  # the old channel is being thrown away whatever happens
            log.debug("etcd: closing the old client failed", exc_info=True)

    async def get(self, key: str) -> Entry | None:
        try:
            found = await self._client.get(key.encode())
        except Exception as exc:
            raise _translate(exc, "get") from exc
        return None if found is None else _entry(found)

    async def list_prefix(self, prefix: str) -> tuple[list[Entry], int]:
        try:
            found = await self._client.get_prefix(prefix.encode())
        except Exception as exc:
            raise _translate(exc, "list") from exc
        return [_entry(kv) for kv in found.kvs], int(found.header.revision)

    async def commit(self, txn: Txn, fence: Fence | None = None) -> int:
        if txn.size + (FENCE_OPS if fence else 0) > self.max_txn_ops:
            raise InvalidArgument(
                f"a change of {txn.size} operations exceeds etcd's limit of {self.max_txn_ops} "
                "per transaction (etcd --max-txn-ops)"
            )
        t = self._client.transactions
        compares: list[Any] = []
        for key, kind, revision in txn.compares:
            if kind == "absent":
                compares.append(t.version(key.encode()) == 0)
            else:
                compares.append(t.mod(key.encode()) == revision)
        failure: list[Any] = []
        if fence is not None:
            compares.append(t.create(fence.key.encode()) == fence.create_revision)
            compares.append(t.value(fence.key.encode()) == fence.value)
            failure.append(t.get(fence.key.encode()))
        success: list[Any] = [t.put(k.encode(), v, lease=lease or None) for k, (v, lease) in
                              txn.puts.items()]
        success += [t.delete(k.encode()) for k in txn.deletes]
        try:
            ok, responses = await self._client.transaction(
                compare=compares, success=success, failure=failure
            )
            if ok:
                return await self._revision_after(responses)
        except Exception as exc:
            raise _translate(exc, "commit") from exc
        if fence is not None:
            leader = responses[0][0][1] if responses and responses[0] else None
            if (
                leader is None
                or leader.create_revision != fence.create_revision
                or leader.value != fence.value
            ):
                raise NotLeader("this coordinator lost the lead before the write")
        try:  # the revision to catch up with before deciding again
            _, current = await self.list_prefix("\0")
        except Unavailable:
            current = 0
        raise Conflict(
            "the cluster state changed while this request was decided; retry",
            keys=[key for key, _, _ in txn.compares],
            revision=current,
        )

    async def _revision_after(self, responses: list[Any]) -> int:
        for response in responses:
            header = getattr(getattr(response, "response_put", None), "header", None)
            if header is None:
                header = getattr(getattr(response, "response_delete_range", None), "header", None)
            if header is not None and header.revision:
                return int(header.revision)
        # a transaction with no operations: read the current revision
        _, revision = await self.list_prefix("\0")
        return revision

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Change]:
        """Read by a thread of its own, so a busy event loop does not slow it down
        (``coordinator/state/watch_thread.py``)."""
        target = self._targets[self._current]
        async for event in watch_in_thread(
                lambda: blocking_channel(target, self._tls, CHANNEL_OPTIONS),
                prefix.encode(), start_revision):
            kind: Literal["put", "delete"] = "put" if event.type == rpc.Event.PUT else "delete"
            yield Change(kind, _entry(event.kv))

    async def grant_lease(self, ttl: int) -> int:
        try:
            lease = await self._client.lease(ttl)
        except Exception as exc:
            raise _translate(exc, "lease grant") from exc
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> int:
        try:
            reply = await self._client.refresh_lease(lease_id)
        except Exception as exc:
            raise _translate(exc, "lease refresh") from exc
        return 0 if reply is None else int(reply.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        try:
            await self._client.revoke_lease(lease_id)
        except etcd_errors.ClientError as exc:
            if "not found" in str(exc):
                return
            raise _translate(exc, "lease revoke") from exc

    async def compact(self, revision: int) -> None:
        """Compact history below ``revision`` (tests and operators)."""
        try:
            await self._client.compact(revision, physical=True)
        except Exception as exc:
            raise _translate(exc, "compact") from exc

    async def delete_prefix(self, prefix: str) -> None:
        """Remove everything under ``prefix`` (tests and cluster teardown only)."""
        try:
            await self._client.delete_prefix(prefix.encode())
        except Exception as exc:
            raise _translate(exc, "delete") from exc

    async def close(self) -> None:
        await self._client.close()
