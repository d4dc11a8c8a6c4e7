"""Schema versions against a real etcd and real coordinators: records release 0.1.0 wrote
are migrated once by the next leader and read the same; a cluster of a newer schema is not
led; the agent stream refuses a peer more than one schema away; and the real thing: a
coordinator of release 0.1.0 (built from its git tag) leads this release's agent stream,
then this release's coordinator takes over and migrates the records 0.1.0 wrote."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from local_cluster.daemons import CoordinatorProcess
from local_cluster.etcd import EtcdProcess
from local_cluster.releases import previous_release

from common.gen.landlord.v1 import admin_pb2_grpc, agent_pb2, agent_pb2_grpc, types_pb2
from common.resources import Resources
from common.schema import RECORD_SCHEMA, SCHEMA_FIELD, STREAM_SCHEMA
from common.stream_commands import StartInstance
from common.unit_spec import UnitSpec
from common.versions import VersionTag
from coordinator.app import Coordinator
from coordinator.state.keys import KeyLayout
from coordinator.state.migrations import RECORDS, dumps
from coordinator.state.records import (
    EventRecord,
    HostHealth,
    HostRecord,
    StatusRecord,
    UnitRecord,
    VersionRecord,
    encode,
)
from coordinator.state.store import EtcdStore, Txn
from tests.integration.coordinator.agents import start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_stream import check, deploy, running
from tests.support import async_eventually

SPEC = UnitSpec("shop", "web", "1.0.0", "demo:1", 8080)
PREVIOUS = "v0.1.0"
COORDINATOR_SETTINGS = {"leader_lease_ttl": 2, "heartbeat_interval": 0.5,
                        "liveness_grace": 3.0, "report_interval": 0.05, "shutdown_grace": 1.0}


def as_0_1_0_wrote(record: Any) -> bytes:
    """The JSON release 0.1.0 stored: this release's, without the schema."""
    raw = json.loads(encode(record))
    raw.pop(SCHEMA_FIELD)
    return dumps(raw)


def records_of_0_1_0(layout: KeyLayout) -> dict[str, bytes]:
    # lost a minute ago: a host lost for forget_host_after would be forgotten, not migrated
    lost_at = float(int(time.time()) - 60)
    host = HostRecord("h-gone", "b1", "127.0.0.2", Resources(cpu=2, memory=1 << 30),
                      {"rack": "r1"}, ("cpu",), "0.1.0", ("demo:1",), HostHealth.LOST,
                      lost_at - 1, lost_at)
    version = VersionRecord(VersionTag("shop/web", "1.0.0", 1.0, SPEC.checksum(), SPEC),
                            {"features": ["first"]})
    return {
        layout.host("h-gone"): as_0_1_0_wrote(host),
        layout.unit("shop", "web"): as_0_1_0_wrote(UnitRecord("shop", "web", "idle", "1.0.0",
                                                              "1.0.0", "b1", 0, 7.0)),
        layout.version("shop", "web", "1.0.0"): as_0_1_0_wrote(version),
        layout.status("i-old"): as_0_1_0_wrote(StatusRecord("i-old", "h-gone", "stopped",
                                                            False, 1, "gone", 8.0)),
        layout.event(1, 0): as_0_1_0_wrote(EventRecord("unit.published", 1.0, "published",
                                                       "shop", "web", "1.0.0")),
    }


async def leading(coordinator: Coordinator) -> Coordinator:
    await coordinator.start()

    async def done() -> bool:
        return coordinator.leadership.is_leader and coordinator.schema.last is not None

    await async_eventually(done, timeout=15, message="leading, records migrated")
    return coordinator


async def test_records_of_0_1_0_are_migrated_once_and_read_the_same(
        etcd: EtcdProcess, prefix: str, store: EtcdStore) -> None:
    layout = KeyLayout(prefix)
    old = records_of_0_1_0(layout)
    alloc = b'{"i-old":{"cpu":1.0,"memory":1024,"network":0,"port":20000,"storage":0}}'
    txn = Txn().put(layout.alloc("h-gone"), alloc)
    for key, value in old.items():
        txn.put(key, value)
    await store.commit(txn)
    before = {key: await store.get(key) for key in old}

    first = await leading(Coordinator(coordinator_config(etcd, prefix, name="new1")))
    try:
        assert first.schema.last is not None
        assert (first.schema.last.rewritten, first.schema.last.schema_written) == (len(old), True)
        state = first.state
        assert state.hosts["h-gone"].value.labels == {"rack": "r1"}
        assert state.units[("shop", "web")].value.stable_version == "1.0.0"
        assert state.versions[("shop", "web")]["1.0.0"].tag.spec == SPEC
        assert state.statuses["i-old"].reason == "gone"
    finally:
        await first.stop()
    after = {key: await store.get(key) for key in old}
    for key, entry in after.items():
        assert entry is not None and json.loads(entry.value)[SCHEMA_FIELD] == RECORD_SCHEMA
        raw = json.loads(entry.value)
        raw.pop(SCHEMA_FIELD)
        assert dumps(raw) == old[key], key  # nothing but the schema changed
        assert entry.mod_revision > before[key].mod_revision  # type: ignore[union-attr]
    assert (await store.get(layout.alloc("h-gone"))).value == alloc  # type: ignore[union-attr]
    schema = await store.get(layout.schema)
    assert schema is not None and json.loads(schema.value)["schema"] == RECORD_SCHEMA

    second = await leading(Coordinator(coordinator_config(etcd, prefix, name="new2")))
    try:
        assert second.schema.last is not None
        assert (second.schema.last.rewritten, second.schema.last.schema_written) == (0, False)
    finally:
        await second.stop()
    for key, entry in after.items():
        again = await store.get(key)
        assert again is not None and entry is not None
        assert again.mod_revision == entry.mod_revision, f"{key} written again"


async def test_a_coordinator_does_not_lead_a_cluster_of_a_newer_schema(
        etcd: EtcdProcess, prefix: str, store: EtcdStore,
        caplog: pytest.LogCaptureFixture) -> None:
    layout = KeyLayout(prefix)
    newer = json.dumps({"schema": RECORD_SCHEMA + 1, "release": "9.0.0"}).encode()
    await store.commit(Txn().put(layout.schema, newer))
    coordinator = Coordinator(coordinator_config(etcd, prefix, name="old"))
    caplog.set_level(logging.ERROR)
    await coordinator.start()
    try:
        await asyncio.sleep(3)  # longer than a lease TTL and many campaign retries
        assert not coordinator.leadership.is_leader
        assert await store.get(layout.leader) is None
        said = [r.getMessage() for r in caplog.records if "will not lead" in r.getMessage()]
        assert said and f"schema {RECORD_SCHEMA + 1} (written by release 9.0.0)" in said[0]
        assert len(said) == 1, "said once, not at every retry"
    finally:
        await coordinator.stop()
    assert (await store.get(layout.schema)).value == newer  # type: ignore[union-attr]


async def register(address: str, schema: int) -> agent_pb2.CoordinatorMessage:
    async with grpc.aio.insecure_channel(address) as channel:
        call = agent_pb2_grpc.AgentStreamStub(channel).Session()
        await call.write(agent_pb2.AgentMessage(register=agent_pb2.Register(
            host_id=f"h-schema-{schema}", building="default", address="127.0.0.2",
            capacity=types_pb2.Resources(cpu_millis=1000, memory_bytes=1 << 30),
            agent_version="x", schema=schema)))
        try:
            reply: agent_pb2.CoordinatorMessage = await call.read()
        finally:
            call.cancel()
        return reply


async def test_the_stream_takes_a_0_1_0_agent_and_refuses_one_two_schemas_ahead(
        coordinator: Coordinator) -> None:
    address = coordinator.config.listen
    reply = await register(address, 0)  # release 0.1.0 sends no schema
    assert reply.WhichOneof("body") == "registered"
    assert reply.registered.schema == STREAM_SCHEMA
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await register(address, STREAM_SCHEMA + 2)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details() or ""
    assert f"agent stream schema {STREAM_SCHEMA + 2}" in details
    assert f"speaks schema {STREAM_SCHEMA}" in details and "upgrade the coordinator" in details
    assert "h-schema-4" not in coordinator.state.hosts


async def test_a_coordinator_of_0_1_0_takes_this_agent_and_this_coordinator_migrates_its_records(
        etcd: EtcdProcess, prefix: str, store: EtcdStore, tmp_path: Path) -> None:
    """Release 0.1.0's coordinator (built from its tag) leads first and writes the records
    as that release does; then this release's coordinator takes over on the same prefix."""
    old_bin = await asyncio.to_thread(previous_release, PREVIOUS)
    old = CoordinatorProcess(tmp_path, "old", etcd.endpoint, prefix, COORDINATOR_SETTINGS,
                             bin_dir=old_bin)
    new_config = coordinator_config(etcd, prefix, name="new")
    agent = start_agent([old.address, new_config.listen], "h-compat", "127.0.0.2")
    new: Coordinator | None = None
    try:
        await asyncio.to_thread(old.start)
        await async_eventually(check(lambda: agent.stream.connected.is_set()), timeout=20,
                               message="this agent registered with the 0.1.0 coordinator")
        async with grpc.aio.insecure_channel(old.address) as channel:
            await deploy(admin_pb2_grpc.AdminStub(channel), replicas=1)
            placed = await async_eventually(
                lambda: running(admin_pb2_grpc.AdminStub(channel), 1), timeout=20)
        layout = KeyLayout(prefix)
        written = {e.key: e for e in (await store.list_prefix(layout.root))[0]
                   if RECORDS.versioned(layout.kind_of(e.key)[0])}
        kinds = {layout.kind_of(key)[0] for key in written}
        assert {"hosts", "instances", "units", "versions", "rollouts"} <= kinds, kinds
        assert not any(SCHEMA_FIELD in json.loads(e.value) for e in written.values())
        await asyncio.to_thread(old.stop)

        new = await leading(Coordinator(new_config))
        assert new.schema.last is not None and new.schema.last.rewritten >= len(written) - 2
        for key in written:
            entry = await store.get(key)
            assert entry is not None, key
            assert json.loads(entry.value)[SCHEMA_FIELD] == RECORD_SCHEMA, key
        assert [i.instance_id for i in new.state.instances_of("shop", "web")] == \
            [placed[0].instance_id]
        await async_eventually(check(lambda: agent.stream.target == new_config.listen
                                     and agent.stream.connected.is_set()), timeout=20,
                               message="this agent moved to the new coordinator")
        async with grpc.aio.insecure_channel(new_config.listen) as channel:
            again = await async_eventually(
                lambda: running(admin_pb2_grpc.AdminStub(channel), 1), timeout=20)
        assert again[0].instance_id == placed[0].instance_id
        starts = [c for c in agent.runtime.executed if isinstance(c, StartInstance)]
        # the take-over placed nothing new (a replayed start of the same id is idempotent)
        assert {s.instance_id for s in starts} == {placed[0].instance_id}
        assert list(agent.runtime.instances) == [placed[0].instance_id]
    finally:
        await agent.stop()
        if new is not None:
            await new.stop()
        await asyncio.to_thread(old.stop)
