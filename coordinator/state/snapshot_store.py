"""Taking a snapshot from etcd (any coordinator, one consistent read) and restoring one onto
an empty etcd while no coordinator runs.

A restore writes ``{p}/restoring`` first, then the snapshot's keys in transactions that each
require that marker unchanged, then deletes the marker. While the marker exists no
coordinator campaigns (``restore_refusal`` in ``SchemaUpgrade``), so a coordinator started
too early cannot lead a half-written cluster, and agents that reconnect meanwhile are told
nothing. An interrupted restore is finished by running it again with the same snapshot: the
marker says the keys under the prefix are a restore's, which is written again, and keys the
snapshot lacks are deleted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import FailedPrecondition
from coordinator.state.keys import KeyLayout
from coordinator.state.leadership import Leadership
from coordinator.state.snapshot import Snapshot, snapshot_of
from coordinator.state.store import Entry, Store, Txn

__all__ = ["ClusterSnapshots", "RestoreOutcome", "RestoreRefused", "restore_refusal",
           "restore_snapshot", "take_snapshot"]


class RestoreRefused(FailedPrecondition):
    """The target etcd is not one a snapshot may be restored onto."""


async def take_snapshot(store: Store, layout: KeyLayout, *, release: str,
                        now: float) -> Snapshot:
    """Every key of the cluster at one revision (one range read)."""
    entries, revision = await store.list_prefix(layout.root)
    return snapshot_of(entries, revision, layout, taken_at=now, release=release)


class ClusterSnapshots:
    """The Admin API's snapshots: taken by the leader only, so its audit trail (which only
    the leader writes) records every copy of the cluster's secrets that left it."""

    def __init__(self, store: Store, layout: KeyLayout, leadership: Leadership,
                 release: str) -> None:
        self._store = store
        self._layout = layout
        self._leadership = leadership
        self._release = release

    async def take(self, now: float) -> Snapshot:
        self._leadership.fence  # noqa: B018  (raises NotLeader, naming the leader)
        return await take_snapshot(self._store, self._layout, release=self._release, now=now)


def restore_refusal(existing: Sequence[Entry], layout: KeyLayout) -> str:
    """Why a snapshot may not be restored onto a prefix holding ``existing`` ("" when it
    may: nothing there, or only what an interrupted restore left)."""
    relative = {e.key[len(layout.root):]: e for e in existing if e.key.startswith(layout.root)}
    leader = relative.get("leader")
    if leader is not None:
        try:
            who = str(json.loads(leader.value).get("id", "?"))
        except (ValueError, AttributeError):
            who = "?"
        return (f"coordinator {who} leads the cluster under {layout.prefix} in this etcd: "
                "stop every coordinator before restoring")
    if "restoring" in relative:
        return ""
    if relative:
        kinds = Counter(key.split("/", 1)[0] for key in relative)
        shown = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        return (f"etcd already holds {len(relative)} keys under {layout.prefix} ({shown}): a "
                "snapshot is restored only onto an empty prefix (a new etcd, or another "
                "etcd_prefix)")
    return ""


@dataclass(frozen=True)
class RestoreOutcome:
    written: int
    """Keys written from the snapshot."""
    removed: int
    """Keys an interrupted restore had left that the snapshot lacks."""
    resumed: bool
    """Whether an interrupted restore was found and finished."""


async def restore_snapshot(store: Store, layout: KeyLayout, snapshot: Snapshot, *,
                           now: float) -> RestoreOutcome:
    """Write ``snapshot`` under ``layout``'s prefix; raises RestoreRefused (nothing written)
    when the prefix is led or holds a cluster already."""
    existing, _ = await store.list_prefix(layout.root)
    reason = restore_refusal(existing, layout)
    if reason:
        raise RestoreRefused(reason, prefix=layout.prefix)
    marker = next((e for e in existing if e.key == layout.restoring), None)
    if marker is None:
        value = json.dumps({"since": now, "snapshot_revision": snapshot.revision,
                            "keys": len(snapshot.entries)}, sort_keys=True).encode()
        revision = await store.commit(Txn().require(layout.restoring, 0)
                                      .put(layout.restoring, value))
    else:
        revision = marker.mod_revision
    per_txn = max(1, store.max_txn_ops - 1)  # one op is the marker's compare
    wanted = {layout.root + key for key, _ in snapshot.entries}
    stale = [e.key for e in existing if e.key != layout.restoring and e.key not in wanted]
    for start in range(0, len(stale), per_txn):
        txn = Txn().require(layout.restoring, revision)
        for key in stale[start:start + per_txn]:
            txn.delete(key)
        await store.commit(txn)
    for start in range(0, len(snapshot.entries), per_txn):
        txn = Txn().require(layout.restoring, revision)
        for key, data in snapshot.entries[start:start + per_txn]:
            txn.put(layout.root + key, data)
        await store.commit(txn)
    await store.commit(Txn().require(layout.restoring, revision).delete(layout.restoring))
    return RestoreOutcome(len(snapshot.entries), len(stale), marker is not None)
