"""Cluster snapshots: the file round-trips, a cut or changed file is refused, lease-bound
keys are left out, and a restore writes exactly the snapshot behind its marker, within etcd's
transaction limit, refusing a led or non-empty prefix and finishing an interrupted restore."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import Unavailable
from coordinator.state.keys import KeyLayout
from coordinator.state.snapshot import Snapshot, SnapshotInvalid, decode, encode, snapshot_of
from coordinator.state.snapshot_store import RestoreRefused, restore_refusal, restore_snapshot
from coordinator.state.store import Entry
from tests.unit.coordinator.memory_store import MemoryStore

LAYOUT = KeyLayout("/landlord")
segment = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))
kind = st.sampled_from(["hosts", "units", "versions", "instances", "status", "events", "alloc"])
keys = st.builds(lambda k, parts: "/".join([k, *parts]), kind, st.lists(segment, min_size=1,
                                                                          max_size=3))
entries = st.dictionaries(keys, st.binary(max_size=64), max_size=30).map(
    lambda d: tuple(sorted(d.items())))


def snap(items: tuple[tuple[str, bytes], ...], revision: int = 7) -> Snapshot:
    return Snapshot(revision, 1_700_000_000.5, "0.2.0", "/landlord", items)


class _NoState:
    def apply(self, change: Any) -> None:
        return None


def store(max_ops: int = 128) -> MemoryStore:
    found = MemoryStore(_NoState())  # type: ignore[arg-type]
    found.max_txn_ops = max_ops
    return found


@given(entries, st.integers(1, 2**62))
def test_a_snapshot_file_round_trips(items: tuple[tuple[str, bytes], ...], revision: int) -> None:
    assert decode(encode(snap(items, revision))) == snap(items, revision)


@given(entries.filter(bool), st.data())
def test_a_cut_file_is_refused(items: tuple[tuple[str, bytes], ...], data: st.DataObject) -> None:
    whole = encode(snap(items))
    cut = data.draw(st.integers(1, len(whole) - 2))
    with pytest.raises(SnapshotInvalid):
        decode(whole[:cut])


def test_a_changed_value_is_refused_by_the_checksum() -> None:
    whole = encode(snap((("units/shop/web", b'{"replicas":2}'),)))
    with pytest.raises(SnapshotInvalid, match="checksum"):
        decode(whole.replace(b'replicas\\":2', b'replicas\\":9'))


@pytest.mark.parametrize(("entries_json", "message"), [
    ([["leader", "x"]], "lease-bound"),
    ([["alive/h1", "x"]], "lease-bound"),
    ([["hosts/../x", "x"]], "not a Landlord key"),
    ([["/hosts/h1", "x"]], "not a Landlord key"),
    ([["hosts/h1\n", "x"]], "not a Landlord key"),
    ([["units/b", "x"], ["units/a", "x"]], "sorted"),
    ([["units/a", {"b64": "%%"}]], "neither text nor base64"),
    ([["units/a"]], "not \\[key, value\\]"),
])
def test_hostile_entries_are_refused(entries_json: list[Any], message: str) -> None:
    body = json.dumps(entries_json, separators=(",", ":"))
    raw = {"format": "landlord-snapshot/1", "revision": 1, "taken_at": 1.0, "keys":
           len(entries_json), "sha256": hashlib.sha256(body.encode()).hexdigest(),
           "entries": entries_json}
    with pytest.raises(SnapshotInvalid, match=message):
        decode(json.dumps(raw).encode())


@pytest.mark.parametrize("data", [b"", b"\xff", b"[]", b'{"format":"other"}', b"{"])
def test_what_is_not_a_snapshot_is_refused(data: bytes) -> None:
    with pytest.raises(SnapshotInvalid):
        decode(data)


def entry(key: str, value: bytes = b"{}", revision: int = 1) -> Entry:
    return Entry(key, value, revision, revision)


def test_a_snapshot_leaves_out_lease_bound_keys_and_other_prefixes() -> None:
    found = snapshot_of([entry("/landlord/leader"), entry("/landlord/alive/h1"),
                         entry("/landlord/restoring"), entry("/landlord/hosts/h1", b"h"),
                         entry("/landlord2/hosts/h9"), entry("/landlord/units/a/b", b"u")],
                        9, LAYOUT, taken_at=1.0, release="r")
    assert found.entries == (("hosts/h1", b"h"), ("units/a/b", b"u"))
    assert found.counts() == {"hosts": 1, "units": 1}
    assert found.summary() == "2 keys at etcd revision 9 (hosts 1, units 1)"


def test_a_restore_is_refused_where_a_coordinator_leads_or_keys_exist() -> None:
    led = [entry("/landlord/leader", b'{"id": "c1", "address": "x"}')]
    assert "coordinator c1 leads" in restore_refusal(led, LAYOUT)
    busy = [entry("/landlord/hosts/h1"), entry("/landlord/hosts/h2"), entry("/landlord/schema")]
    assert "3 keys under /landlord (hosts 2, schema 1)" in restore_refusal(busy, LAYOUT)
    assert restore_refusal([entry("/landlord/restoring"), *busy], LAYOUT) == ""
    assert restore_refusal([entry("/other/hosts/h1")], LAYOUT) == ""


def written(found: MemoryStore) -> dict[str, bytes]:
    return {k[len(LAYOUT.root):]: e.value for k, e in found.entries.items()}


@settings(max_examples=40)
@given(entries, st.integers(2, 9))
def test_a_restore_writes_exactly_the_snapshot_within_the_txn_limit(
        items: tuple[tuple[str, bytes], ...], max_ops: int) -> None:
    target = store(max_ops)
    outcome = asyncio.run(restore_snapshot(target, LAYOUT, snap(items), now=5.0))
    assert written(target) == dict(items)
    assert (outcome.written, outcome.removed, outcome.resumed) == (len(items), 0, False)
    assert all(txn.size <= max_ops for txn in target.commits)
    # every write but the marker's own requires the marker as the restore created it
    assert all(any(c[0] == LAYOUT.restoring for c in txn.compares) for txn in target.commits)


def test_a_refused_restore_writes_nothing() -> None:
    target = store()
    target.put("/landlord/hosts/h1", b"{}")
    with pytest.raises(RestoreRefused, match="1 keys under /landlord"):
        asyncio.run(restore_snapshot(target, LAYOUT, snap((("units/a/b", b"x"),)), now=1.0))
    assert target.commits == []


@given(entries.filter(lambda e: len(e) > 4), entries, st.integers(1, 2))
@settings(max_examples=30)
def test_an_interrupted_restore_is_finished_by_running_it_again(
        items: tuple[tuple[str, bytes], ...], leftovers: tuple[tuple[str, bytes], ...],
        fail_after: int) -> None:
    target = store(3)
    for key, value in leftovers:  # keys of an earlier, different interrupted restore
        target.put(LAYOUT.root + key, value)
    target.put(LAYOUT.restoring, b"{}")
    commits = 0

    def flaky() -> None:
        nonlocal commits
        commits += 1
        if commits == fail_after + 1:
            raise Unavailable("etcd went away")

    target.before_commit = flaky
    with pytest.raises(Unavailable):
        asyncio.run(restore_snapshot(target, LAYOUT, snap(items), now=1.0))
    assert LAYOUT.restoring in target.entries  # still marked: no coordinator leads this
    target.before_commit = None
    outcome = asyncio.run(restore_snapshot(target, LAYOUT, snap(items), now=2.0))
    assert outcome.resumed
    assert written(target) == dict(items)

