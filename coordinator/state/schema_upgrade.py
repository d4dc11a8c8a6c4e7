"""The leader's record migration at take-over, and the cluster's schema key.

When a coordinator takes the lead it first checks ``{p}/schema``: a cluster whose records
are of a newer schema than this release knows is not led by it (``SchemaTooNew``; the
election does not campaign while the cache shows such a key). Then ``SchemaUpgrade.run``
writes back, once, every record older than this release's schema
(``migrations.plan_rewrites``): in fenced transactions that compare each record's revision,
so a record another writer changed meanwhile (an agent registering at the same moment) is
theirs, decided again from the fresher cache and, being current now, left alone. Finally
it records the cluster's schema. A second take-over finds nothing to write and writes
nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from common.errors import FailedPrecondition
from common.schema import release as this_release
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.migrations import RECORDS, Migrations, plan_rewrites
from coordinator.state.records import SchemaRecord
from coordinator.state.store import Entry, Txn

__all__ = ["SchemaTooNew", "SchemaUpgrade", "UpgradeOutcome", "too_new"]

log = logging.getLogger(__name__)


class SchemaTooNew(FailedPrecondition):
    """The cluster's records are of a newer schema than this coordinator knows."""


class Entries(Protocol):
    """The watch-fed cache of raw entries (coordinator/state/view.py)."""

    entries: dict[str, Entry]
    synced: asyncio.Event

    def get(self, key: str) -> Entry | None: ...


@dataclass(frozen=True)
class UpgradeOutcome:
    rewritten: int
    """Records written back migrated."""
    schema_written: bool
    """Whether the cluster's schema key was (re)written."""


def too_new(found: SchemaRecord | None, mine: int, my_release: str) -> str:
    """Why a coordinator of schema ``mine`` must not lead a cluster at ``found`` ("" when
    it may)."""
    if found is None or found.schema <= mine:
        return ""
    by = f" (written by release {found.release})" if found.release else ""
    me = f"release {my_release}" if my_release else "this release"
    return (f"the cluster's records are at schema {found.schema}{by}; this coordinator "
            f"({me}) knows record schema {mine} at most and will not lead: upgrade it")


class SchemaUpgrade:
    def __init__(self, view: Entries, writes: FencedWrites, layout: KeyLayout,
                 migrations: Migrations = RECORDS, release: str | None = None) -> None:
        self._view = view
        self._writes = writes
        self._layout = layout
        self._migrations = migrations
        self.release = this_release() if release is None else release
        self.last: UpgradeOutcome | None = None

    def cluster_schema(self) -> tuple[SchemaRecord | None, int]:
        """The schema key as cached, and its mod revision (0: absent)."""
        entry = self._view.get(self._layout.schema)
        if entry is None:
            return None, 0
        raw = json.loads(entry.value)
        return SchemaRecord(int(raw["schema"]), str(raw.get("release", ""))), entry.mod_revision

    def refusal(self) -> str:
        """Why this coordinator must not lead now ("" when it may), from the cache."""
        if self._view.get(self._layout.restoring) is not None:
            return ("a snapshot restore is writing the cluster's keys, or was interrupted "
                    "(key restoring): this coordinator will not lead until `landlord cluster "
                    "snapshot restore` has finished")
        try:
            found, _ = self.cluster_schema()
        except (ValueError, KeyError, TypeError) as exc:
            return f"the cluster's schema key is unreadable ({exc}); this coordinator will " \
                   "not lead"
        return too_new(found, self._migrations.target, self.release)

    async def campaign_refusal(self) -> str:
        """``refusal()`` once the cache has listed the cluster (before that it knows no
        schema key): asked by the election before each campaign."""
        await self._view.synced.wait()
        return self.refusal()

    def check(self) -> None:
        """Raise SchemaTooNew when this coordinator must not lead."""
        reason = self.refusal()
        if reason:
            raise SchemaTooNew(reason, schema=self._migrations.target)

    async def run(self) -> UpgradeOutcome:
        """Migrate what needs it and record the cluster's schema (leader only)."""
        self.check()
        planned = plan_rewrites(self._view.entries.values(), self._layout, self._migrations)
        size = max(1, (self._writes.max_txn_ops - 2) // 2)  # a compare and a put each
        rewritten = 0
        for start in range(0, len(planned), size):
            keys = [r.key for r in planned[start:start + size]]
            rewritten += await self._writes.retry(
                lambda keys=keys: self._migrate(keys), "record migration")  # type: ignore[misc]
        written = await self._writes.retry(self._record_schema, "the cluster schema")
        self.last = UpgradeOutcome(rewritten, written)
        if rewritten or written:
            log.info("records migrated to schema %d: %d rewritten", self._migrations.target,
                     rewritten)
        return self.last

    async def _migrate(self, keys: Sequence[str]) -> int:
        """One transaction: these records, each as cached now, if still in need."""
        txn = Txn()
        count = 0
        for key in keys:
            entry = self._view.get(key)
            if entry is None:  # deleted meanwhile
                continue
            value = self._migrations.rewrite(self._layout.kind_of(key)[0], entry.value)
            if value is None:  # rewritten meanwhile, at the current schema
                continue
            txn.require(key, entry.mod_revision).put(key, value)
            count += 1
        if count:
            await self._writes.commit(txn)
        return count

    async def _record_schema(self) -> bool:
        found, revision = self.cluster_schema()
        self.check()
        if found is not None and found.schema == self._migrations.target:
            return False
        value = json.dumps(asdict(SchemaRecord(self._migrations.target, self.release)),
                           sort_keys=True).encode()
        await self._writes.commit(Txn().require(self._layout.schema, revision)
                                  .put(self._layout.schema, value))
        return True
