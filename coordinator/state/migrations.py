"""Schema migrations of the records in etcd: pure functions of their decoded JSON.

Each record of a versioned kind carries ``"schema"`` (``common.schema.RECORD_SCHEMA`` when
this release writes it; absent in what release 0.1.0 wrote, which is schema 1). A kind's
steps take a record from schema n to n + 1; ``migrate`` runs those from the record's schema
up to the target and stamps the new number after each, so a kind without a step for some n
still moves on (1 -> 2 is exactly that: "the record now says its schema").

Reading migrates in memory (``decode`` in records.py and the rollout record's decoder), so
a record not yet written back reads the same as one that was; the leader writes migrated
records back once, when it takes the lead (``coordinator/state/schema_upgrade.py``, which
uses ``plan_rewrites``). A record of a newer schema than the target is left as it is: it is
read with its unknown fields ignored, and never rewritten (that would drop them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.schema import RECORD_SCHEMA, SCHEMA_FIELD, UNVERSIONED
from coordinator.state.keys import KeyLayout
from coordinator.state.store import Entry

__all__ = ["RECORDS", "VERSIONED_KINDS", "Migrations", "Rewrite", "Step", "dumps",
           "plan_rewrites"]

Raw = dict[str, Any]
Step = Callable[[Raw], Raw]
"""One schema step of one kind: the record at schema n -> its content at schema n + 1 (the
number itself is stamped by ``Migrations.migrate``). Must not mutate its argument."""

VERSIONED_KINDS = ("hosts", "instances", "status", "units", "versions", "routes", "rollouts",
                   "events")
"""The kinds of key (``KeyLayout.kind_of``) whose records carry a schema. Not versioned:
``leader`` and ``alive`` (bound to leases, written afresh every term and session),
``alloc`` (a bare map of instance ids that release 0.1.0 reads whole, so a field in it
would break 0.1.0 coordinators mid-upgrade; a change of its shape goes by the cluster's
schema key), ``active-rollout`` (lives only as long as its rollout; one missing for an
active rollout an older release wrote is created when a leader takes over:
coordinator/rollouts/one_active.py), ``drains`` and ``decommissioned`` (host drain
records and the marks decommissioned hosts leave, read with defaults for missing fields),
and ``schema`` itself."""


def dumps(raw: Mapping[str, Any]) -> bytes:
    """The stored form of a record: compact JSON with sorted keys, as ``encode`` writes."""
    return json.dumps(raw, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Rewrite:
    """A record to write back migrated, guarded by the revision it was read at."""

    key: str
    mod_revision: int
    value: bytes


@dataclass(frozen=True)
class Migrations:
    """The step list of every versioned kind, up to ``target``."""

    target: int = RECORD_SCHEMA
    steps: Mapping[str, Mapping[int, Step]] = field(
        default_factory=lambda: {kind: {} for kind in VERSIONED_KINDS})
    """kind -> {n: the step from schema n to n + 1}; a kind absent here is not versioned."""

    @staticmethod
    def schema_of(raw: Mapping[str, Any]) -> int:
        """The schema a record was written in (none written: release 0.1.0's, 1)."""
        value = raw.get(SCHEMA_FIELD)
        return value if isinstance(value, int) and value >= UNVERSIONED else UNVERSIONED

    def versioned(self, kind: str) -> bool:
        return kind in self.steps

    def needs(self, kind: str, raw: Mapping[str, Any]) -> bool:
        """Whether the record is older than the target (and so would be rewritten)."""
        return self.versioned(kind) and self.schema_of(raw) < self.target

    def migrate(self, kind: str, raw: Mapping[str, Any]) -> Raw:
        """The record at the target schema; unchanged when it is there or newer, or when
        ``kind`` is not versioned."""
        if not self.needs(kind, raw):
            return dict(raw)
        steps = self.steps[kind]
        out = dict(raw)
        for n in range(self.schema_of(raw), self.target):
            step = steps.get(n)
            if step is not None:
                out = step(out)
            out[SCHEMA_FIELD] = n + 1
        return out

    def stamp(self, raw: Mapping[str, Any]) -> Raw:
        """A record this release writes: its content and the target schema."""
        return {**raw, SCHEMA_FIELD: self.target}

    def rewrite(self, kind: str, value: bytes) -> bytes | None:
        """The migrated stored form of ``value``; None when it needs no rewrite (current,
        newer, not versioned, or not a JSON object: left to the reader to complain)."""
        if not self.versioned(kind):
            return None
        try:
            raw = json.loads(value)
        except ValueError:
            return None
        if not isinstance(raw, dict) or not self.needs(kind, raw):
            return None
        return dumps(self.migrate(kind, raw))


RECORDS = Migrations()
"""This release's migrations: 1 -> 2 only stamps the schema (no record changed shape)."""


def plan_rewrites(entries: Iterable[Entry], layout: KeyLayout,
                  migrations: Migrations = RECORDS) -> list[Rewrite]:
    """Every record under ``layout`` that needs migrating, in key order, with its migrated
    value and the revision a compare-and-swap must find."""
    planned = []
    for entry in sorted(entries, key=lambda e: e.key):
        kind, _ = layout.kind_of(entry.key)
        if kind and entry.lease == 0:
            value = migrations.rewrite(kind, entry.value)
            if value is not None:
                planned.append(Rewrite(entry.key, entry.mod_revision, value))
    return planned
