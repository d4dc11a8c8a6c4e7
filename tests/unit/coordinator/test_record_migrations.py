"""Record schema migrations: pure steps per kind, run once, never rewriting what is current."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.resources import Resources
from common.schema import RECORD_SCHEMA, SCHEMA_FIELD
from common.unit_spec import UnitSpec
from common.versions import VersionTag
from coordinator.rollouts.record import decode_record, encode_record
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.state.cluster_state import ClusterState
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.migrations import (
    RECORDS,
    VERSIONED_KINDS,
    Migrations,
    dumps,
    plan_rewrites,
)
from coordinator.state.records import (
    EventRecord,
    HostHealth,
    HostRecord,
    InstanceRecord,
    RouteRecord,
    SchemaRecord,
    StatusRecord,
    UnitRecord,
    VersionRecord,
    decode,
    encode,
)
from coordinator.state.schema_upgrade import SchemaTooNew, SchemaUpgrade, too_new
from coordinator.state.store import Entry
from tests.unit.coordinator.memory_store import CurrentCache, Leading, MemoryStore
from tests.unit.rollouts.rollout_sim import make_record

LAYOUT = KeyLayout("/landlord")
names = st.text("abcdefghij-", min_size=1, max_size=8)
floats = st.floats(min_value=0, max_value=1e9, allow_nan=False)
resources = st.builds(Resources, cpu=st.floats(0, 64, allow_nan=False),
                      memory=st.integers(0, 1 << 40))
RECORD_STRATEGIES: dict[str, Any] = {
    "hosts": st.builds(HostRecord, host_id=names, building=names, address=names,
                       capacity=resources, labels=st.dictionaries(names, names, max_size=3),
                       enforceable=st.tuples(names), agent_version=names,
                       images=st.tuples(names), status=st.sampled_from(list(HostHealth)),
                       registered_at=floats, status_changed_at=floats),
    "instances": st.builds(InstanceRecord, instance_id=names, apartment=names, unit=names,
                           version=names, slot=st.sampled_from(["blue", "green"]),
                           host_id=names, port=st.integers(0, 65535), resources=resources,
                           created_at=floats, replaces=names),
    "status": st.builds(StatusRecord, instance_id=names, host_id=names, state=names,
                        healthy=st.booleans(), restarts=st.integers(0, 99), reason=names,
                        changed_at=floats),
    "units": st.builds(UnitRecord, apartment=names, unit=names, state=names,
                       stable_version=names, latest_version=names, building=names,
                       replicas=st.integers(0, 99), updated_at=floats),
    "routes": st.builds(RouteRecord, apartment=names, unit=names, building=names,
                        service_port=st.integers(0, 65535), health_path=names,
                        split=st.dictionaries(names, floats, max_size=3), updated_at=floats),
    "events": st.builds(EventRecord, type=names, time=floats, message=names,
                        details=st.dictionaries(names, names, max_size=2),
                        batch_index=st.integers(0, 999)),
}
CLASSES = {"hosts": HostRecord, "instances": InstanceRecord, "status": StatusRecord,
           "units": UnitRecord, "routes": RouteRecord, "events": EventRecord}


def as_0_1_0_wrote(record: Any) -> bytes:
    """The stored form release 0.1.0 wrote: the same JSON without a schema."""
    raw = json.loads(encode(record))
    raw.pop(SCHEMA_FIELD)
    return dumps(raw)


kinds_and_records = st.sampled_from(sorted(RECORD_STRATEGIES)).flatmap(
    lambda kind: st.tuples(st.just(kind), RECORD_STRATEGIES[kind]))


@given(kinds_and_records)
def test_a_migrated_record_loads_as_the_old_one_did_and_migrates_only_once(
        found: tuple[str, Any]) -> None:
    kind, record = found
    cls = CLASSES[kind]
    old = as_0_1_0_wrote(record)
    migrated = RECORDS.rewrite(kind, old)
    assert migrated is not None and json.loads(migrated)[SCHEMA_FIELD] == RECORD_SCHEMA
    assert decode(cls, migrated) == decode(cls, old) == decode(cls, encode(record))
    raw = json.loads(old)
    assert RECORDS.migrate(kind, RECORDS.migrate(kind, raw)) == RECORDS.migrate(kind, raw)
    assert RECORDS.rewrite(kind, migrated) is None
    assert RECORDS.rewrite(kind, encode(record)) is None  # what this release writes is current


def test_version_and_rollout_records_of_0_1_0_load_the_same_migrated() -> None:
    spec = UnitSpec("shop", "web", "1.0.0", "demo:1", 8080)
    version = VersionRecord(VersionTag("shop/web", "1.0.0", 1.0, spec.checksum(), spec),
                            {"features": ["f"]})
    old = as_0_1_0_wrote(version)
    migrated = RECORDS.rewrite("versions", old)
    assert migrated is not None
    assert decode(VersionRecord, migrated) == decode(VersionRecord, old) == version
    rollout = make_record(RolloutSettings(strategy=Strategy.CANARY))
    raw = json.loads(encode_record(rollout))
    assert raw.pop(SCHEMA_FIELD) == RECORD_SCHEMA
    old = dumps(raw)
    migrated = RECORDS.rewrite("rollouts", old)
    assert migrated is not None
    assert decode_record(migrated) == decode_record(old) == rollout


def test_every_record_this_release_writes_says_its_schema() -> None:
    host = HostRecord("h1", "b", "127.0.0.2", Resources(cpu=1, memory=1))
    assert json.loads(encode(host))[SCHEMA_FIELD] == RECORD_SCHEMA
    assert set(CLASSES) | {"versions", "rollouts"} == set(VERSIONED_KINDS)


def rename_replicas(raw: dict[str, Any]) -> dict[str, Any]:
    """A test-only shape change: schema 3 calls ``replicas`` ``replica_count``."""
    out = {k: v for k, v in raw.items() if k != "replicas"}
    out["replica_count"] = raw.get("replicas", 0)
    return out


def double_count(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 4 counts in halves (test only)."""
    return {**raw, "replica_count": raw["replica_count"] * 2}


SHAPED = Migrations(target=4, steps={"units": {2: rename_replicas, 3: double_count},
                                     "hosts": {}})


@given(st.integers(0, 50), st.sampled_from([None, 1, 2, 3, 4]))
def test_steps_run_in_order_from_the_records_schema_and_exactly_once(
        replicas: int, schema: int | None) -> None:
    raw: dict[str, Any] = {"apartment": "a", "unit": "u", "replicas": replicas}
    if schema is not None:
        raw[SCHEMA_FIELD] = schema
        if schema >= 3:
            raw = {**rename_replicas(raw), SCHEMA_FIELD: schema}
        if schema >= 4:
            raw["replica_count"] = replicas * 2
    once = SHAPED.migrate("units", raw)
    assert once == {"apartment": "a", "unit": "u", "replica_count": replicas * 2,
                    SCHEMA_FIELD: 4}
    assert SHAPED.migrate("units", once) == once
    assert SHAPED.needs("units", raw) == ((schema or 1) < 4)


def test_newer_unversioned_and_unreadable_records_are_left_alone() -> None:
    newer = {"apartment": "a", "unit": "u", "future": 1, SCHEMA_FIELD: 9}
    assert SHAPED.migrate("units", newer) == newer and not SHAPED.needs("units", newer)
    assert SHAPED.rewrite("units", dumps(newer)) is None
    assert SHAPED.rewrite("alloc", b'{"i1": {"cpu": 1}}') is None  # not versioned
    assert SHAPED.rewrite("units", b"not json") is None
    assert SHAPED.rewrite("units", b"[1]") is None
    # a host (no steps at all) still moves on: only its schema changes
    assert SHAPED.migrate("hosts", {"host_id": "h"}) == {"host_id": "h", SCHEMA_FIELD: 4}


def entry(key: str, value: bytes, revision: int, lease: int = 0) -> Entry:
    return Entry(key, value, revision, revision, lease)


def test_the_plan_names_only_records_in_need_with_their_revisions() -> None:
    unit = UnitRecord("a", "u", replicas=2)
    entries = [
        entry(LAYOUT.unit("a", "u"), as_0_1_0_wrote(unit), 5),
        entry(LAYOUT.unit("a", "v"), encode(UnitRecord("a", "v")), 6),
        entry(LAYOUT.alloc("h1"), b'{"i1": {"cpu": 1, "port": 20000}}', 7),
        entry(LAYOUT.alive("h1"), b'{"since": 1}', 8, lease=99),
        entry("/other/units/a/u", as_0_1_0_wrote(unit), 9),
    ]
    plan = plan_rewrites(entries, LAYOUT)
    assert [(r.key, r.mod_revision) for r in plan] == [(LAYOUT.unit("a", "u"), 5)]
    assert decode(UnitRecord, plan[0].value) == unit


def test_a_coordinator_does_not_lead_a_cluster_of_a_newer_schema() -> None:
    assert too_new(None, 2, "0.2.0") == ""
    assert too_new(SchemaRecord(2, "0.2.0"), 2, "0.2.0") == ""
    assert too_new(SchemaRecord(1), 2, "0.2.0") == ""
    reason = too_new(SchemaRecord(3, "0.3.0"), 2, "0.2.0")
    assert "schema 3 (written by release 0.3.0)" in reason
    assert "release 0.2.0" in reason and "schema 2" in reason and "upgrade" in reason


class Cache:
    """The raw-entry cache over a MemoryStore (it is current after every commit)."""

    def __init__(self, store: MemoryStore) -> None:
        self.entries = store.entries
        self.synced = asyncio.Event()

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)


def upgrade_on(store: MemoryStore, migrations: Migrations = RECORDS) -> SchemaUpgrade:
    writes = FencedWrites(store, Leading(), CurrentCache())
    return SchemaUpgrade(Cache(store), writes, LAYOUT, migrations, release="9.9.9")


async def test_the_upgrade_migrates_once_and_a_second_run_writes_nothing() -> None:
    store = MemoryStore(ClusterState(LAYOUT))
    for n in range(150):  # more than one transaction holds
        store.put(LAYOUT.unit("a", f"u{n}"), as_0_1_0_wrote(UnitRecord("a", f"u{n}", replicas=n)))
    store.put(LAYOUT.unit("a", "current"), encode(UnitRecord("a", "current")))
    upgrade = upgrade_on(store)
    outcome = await upgrade.run()
    assert (outcome.rewritten, outcome.schema_written) == (150, True)
    assert len(store.commits) == 4  # 63 + 63 + 24 records, then the schema key
    assert json.loads(store.entries[LAYOUT.schema].value) == {"schema": RECORD_SCHEMA,
                                                             "release": "9.9.9"}
    assert all(RECORDS.rewrite("units", e.value) is None for e in store.entries.values()
               if e.key.startswith(LAYOUT.prefix + "/units/"))
    assert store.state.units[("a", "u7")].value == UnitRecord("a", "u7", replicas=7)
    again = await upgrade_on(store).run()
    assert (again.rewritten, again.schema_written) == (0, False)
    assert len(store.commits) == 4


async def test_a_concurrent_writer_wins_and_its_record_is_not_rewritten() -> None:
    store = MemoryStore(ClusterState(LAYOUT))
    key = LAYOUT.unit("a", "u")
    store.put(key, as_0_1_0_wrote(UnitRecord("a", "u", replicas=1)))
    store.put(LAYOUT.unit("a", "v"), as_0_1_0_wrote(UnitRecord("a", "v")))
    theirs = encode(UnitRecord("a", "u", replicas=5))

    def another_writer() -> None:
        store.before_commit = None
        store.put(key, theirs)

    store.before_commit = another_writer
    outcome = await upgrade_on(store).run()
    assert outcome.rewritten == 1  # only "v": "u" became current under the migration
    assert store.entries[key].value == theirs


async def test_a_newer_cluster_is_refused_before_anything_is_written() -> None:
    store = MemoryStore(ClusterState(LAYOUT))
    store.put(LAYOUT.schema, b'{"release": "0.3.0", "schema": 3}')
    store.put(LAYOUT.unit("a", "u"), as_0_1_0_wrote(UnitRecord("a", "u")))
    upgrade = upgrade_on(store)
    assert "schema 3" in upgrade.refusal()
    with pytest.raises(SchemaTooNew, match="will not lead"):
        await upgrade.run()
    assert store.commits == []
    store.put(LAYOUT.schema, b"{")
    assert "unreadable" in upgrade.refusal()


async def test_a_real_shape_change_is_written_back_and_read_back() -> None:
    store = MemoryStore(ClusterState(LAYOUT))
    store.put(LAYOUT.unit("a", "u"), as_0_1_0_wrote(UnitRecord("a", "u", replicas=3)))
    store.put(LAYOUT.schema, b'{"release": "0.2.0", "schema": 2}')
    outcome = await upgrade_on(store, SHAPED).run()
    assert (outcome.rewritten, outcome.schema_written) == (1, True)
    stored = json.loads(store.entries[LAYOUT.unit("a", "u")].value)
    assert stored["replica_count"] == 6 and "replicas" not in stored
    assert json.loads(store.entries[LAYOUT.schema].value)["schema"] == 4


async def test_the_election_asks_only_once_the_cache_has_listed_the_cluster() -> None:
    store = MemoryStore(ClusterState(LAYOUT))
    store.put(LAYOUT.schema, b'{"release": "0.3.0", "schema": 3}')
    upgrade = upgrade_on(store)
    asking = asyncio.ensure_future(upgrade.campaign_refusal())
    await asyncio.sleep(0.01)
    assert not asking.done()
    upgrade._view.synced.set()
    assert "schema 3" in await asking
