"""Cluster snapshots on a real coordinator over mutual TLS and a private etcd, with in-process
agents: an admin saves one (a viewer may not; both calls audited), it holds the cluster's keys
and none bound to a lease; a restore goes only onto an empty prefix (refused where a
coordinator leads or keys exist, writing nothing); a coordinator does not lead while a
restore's marker is there, and leads the restored cluster, as it was, once it is done."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from local_cluster.etcd import EtcdProcess

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.transport import create_channel
from coordinator.app import Coordinator
from coordinator.config import CoordinatorConfig
from coordinator.state.keys import KeyLayout
from coordinator.state.snapshot import Snapshot, decode
from coordinator.state.snapshot_store import RestoreRefused, restore_snapshot
from coordinator.state.store import EtcdStore, Txn
from tests.integration.coordinator.agents import LocalAgent, start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_mtls import Pki, certs, until
from tests.integration.coordinator.test_host_cordon_flow import hosts_of, publish_and_deploy


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    certs("init", str(root))
    for kind, name in (("coordinator", "c1"), ("coordinator", "c2"), ("admin", "root"),
                       ("viewer", "vera"), ("agent", "h1"), ("agent", "h2")):
        certs("issue", kind, name, "--ca-dir", str(root))
    yield Pki(root)


def config(etcd: EtcdProcess, prefix: str, pki: Pki, name: str) -> CoordinatorConfig:
    return coordinator_config(etcd, prefix, name, tls_ca_file=pki.ca,
                              tls_cert_file=str(pki.root / f"coordinator-{name}.pem"),
                              tls_key_file=str(pki.root / f"coordinator-{name}.key"))


async def save(stub: Any) -> bytes:
    return b"".join([c.data async for c in stub.SaveSnapshot(admin_pb2.SaveSnapshotRequest())])


async def keys_under(store: EtcdStore, prefix: str) -> dict[str, bytes]:
    entries, _ = await store.list_prefix(prefix + "/")
    return {e.key[len(prefix) + 1:]: e.value for e in entries}


async def test_save_then_restore_onto_an_empty_prefix(etcd: EtcdProcess, prefix: str,
                                                      pki: Pki, store: EtcdStore) -> None:
    first = config(etcd, prefix, pki, "c1")
    c1 = Coordinator(first)
    await c1.start()
    agents: list[LocalAgent] = []
    restored_at, busy_at = prefix + "-restored", prefix + "-busy"
    started: list[Coordinator] = []
    try:
        agents = [start_agent([first.listen], h, f"127.0.0.{n}", tls=pki.tls(f"host-{h}"))
                  for h, n in (("h1", 2), ("h2", 3))]
        await until(lambda: c1.leadership.is_leader and {"h1", "h2"} <= set(c1.fleet.sessions))
        async with create_channel(first.listen, pki.tls("admin-root")) as r, \
                create_channel(first.listen, pki.tls("viewer-vera")) as v:
            root, vera = admin_pb2_grpc.AdminStub(r), admin_pb2_grpc.AdminStub(v)
            await publish_and_deploy(root, "web", 250, 9001, replicas=2)
            await until(lambda: len(hosts_of(c1, "web")) == 2 and _stable(c1) == "1.0.0", 20)
            snapshot = decode(await save(root))
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await save(vera)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        kinds = snapshot.counts()
        assert kinds["hosts"] == 2 and kinds["instances"] == 2 and kinds["units"] == 1
        assert not [k for k, _ in snapshot.entries if k == "leader" or k.startswith("alive/")]
        live = await keys_under(store, prefix)
        for key, value in snapshot.entries:  # what was saved is what etcd held
            if key.startswith(("versions/", "hosts/", "instances/")):  # (others move on)
                assert live.get(key) == value, key

        # where a coordinator leads, and onto keys that exist: refused, nothing written
        with pytest.raises(RestoreRefused, match="coordinator c1 leads"):
            await restore_snapshot(store, KeyLayout(prefix), snapshot, now=1.0)
        await store.commit(Txn().put(busy_at + "/hosts/x", b"{}"))
        with pytest.raises(RestoreRefused, match="1 keys under"):
            await restore_snapshot(store, KeyLayout(busy_at), snapshot, now=1.0)
        assert await keys_under(store, busy_at) == {"hosts/x": b"{}"}

        # a restore that stopped half-way: no coordinator leads it
        layout = KeyLayout(restored_at)
        half = Snapshot(snapshot.revision, snapshot.taken_at, snapshot.release,
                        snapshot.prefix, snapshot.entries[: len(snapshot.entries) // 2])
        await store.commit(Txn().put(layout.restoring, b"{}"))
        await store.commit(Txn().extend(_puts(layout, half)))
        c2 = Coordinator(config(etcd, restored_at, pki, "c2"))
        started.append(c2)
        await c2.start()
        await asyncio.sleep(2.0)
        assert not c2.leadership.is_leader
        outcome = await restore_snapshot(store, layout, snapshot, now=2.0)
        assert outcome.resumed and outcome.written == len(snapshot.entries)
        await until(lambda: c2.leadership.is_leader, timeout=10)
        assert hosts_of(c2, "web") == hosts_of(c1, "web")
        assert sorted(c2.state.hosts) == ["h1", "h2"]
        assert _stable(c2) == "1.0.0" and c2.state.units[("shop", "web")].value.replicas == 2

        def audits() -> list[tuple[str, str]]:
            return [(e.details["caller"], e.details["outcome"])
                    for e in c1.state.event_history()
                    if e.type == EventType.AUDIT and e.details["method"] == "SaveSnapshot"]

        await until(lambda: len(audits()) == 2)
        assert audits() == [("admin/root", "OK"), ("viewer/vera", "PERMISSION_DENIED")]
    finally:
        for agent in agents:
            await agent.stop()
        for c in [c1, *started]:
            await c.stop()
        for other in (restored_at, busy_at):
            await store.delete_prefix(other + "/")


def _puts(layout: KeyLayout, snapshot: Snapshot) -> Txn:
    txn = Txn()
    for key, value in snapshot.entries:
        txn.put(layout.root + key, value)
    return txn


def _stable(c: Coordinator) -> str:
    unit = c.state.units.get(("shop", "web"))
    return unit.value.stable_version if unit else ""
