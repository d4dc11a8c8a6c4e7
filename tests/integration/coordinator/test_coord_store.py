"""EtcdStore on a real etcd: compare-and-swap, fencing, leases, watch resume, compaction."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import pytest
from aetcd import rpc
from aetcd.rpc import rpc_pb2_grpc
from local_cluster.etcd import EtcdProcess
from local_cluster.processes import free_port

from common.errors import Conflict, Unavailable
from coordinator.errors import HistoryCompacted, NotLeader
from coordinator.state.store import EtcdStore, Fence, Txn
from coordinator.state.view import ClusterView
from tests.support import async_eventually


async def test_txn_applies_all_or_nothing(store: EtcdStore, prefix: str) -> None:
    a, b = f"{prefix}/a", f"{prefix}/b"
    await store.commit(Txn().require(a, 0).put(a, b"1").put(b, b"1"))
    first = await store.get(a)
    assert first is not None and first.value == b"1"
    # a stale revision on one key refuses the whole change: b stays as it was
    stale = Txn().require(a, first.mod_revision - 1).put(a, b"2").put(b, b"2")
    with pytest.raises(Conflict):
        await store.commit(stale)
    assert (await store.get(b)).value == b"1"  # type: ignore[union-attr]
    fresh = Txn().require(a, first.mod_revision).put(a, b"2").delete(b)
    revision = await store.commit(fresh)
    assert revision > first.mod_revision
    assert (await store.get(a)).value == b"2"  # type: ignore[union-attr]
    assert await store.get(b) is None


async def test_create_if_absent_refuses_an_existing_key(store: EtcdStore, prefix: str) -> None:
    key = f"{prefix}/once"
    await store.commit(Txn().require(key, 0).put(key, b"x"))
    with pytest.raises(Conflict):
        await store.commit(Txn().require(key, 0).put(key, b"y"))


async def test_fence_rejects_a_deposed_leader(store: EtcdStore, prefix: str) -> None:
    leader = f"{prefix}/leader"
    await store.commit(Txn().require(leader, 0).put(leader, b"me"))
    entry = await store.get(leader)
    assert entry is not None
    fence = Fence(leader, entry.create_revision, b"me")
    await store.commit(Txn().put(f"{prefix}/x", b"1"), fence)
    # someone else becomes leader (the key is recreated): the old fence no longer holds
    await store.commit(Txn().delete(leader))
    await store.commit(Txn().require(leader, 0).put(leader, b"other"))
    with pytest.raises(NotLeader):
        await store.commit(Txn().put(f"{prefix}/x", b"2"), fence)
    assert (await store.get(f"{prefix}/x")).value == b"1"  # type: ignore[union-attr]


async def test_lease_key_vanishes_when_not_refreshed(store: EtcdStore, prefix: str) -> None:
    lease = await store.grant_lease(2)
    key = f"{prefix}/alive"
    await store.commit(Txn().put(key, b"1", lease))
    assert await store.refresh_lease(lease) > 0
    await async_eventually(lambda: _absent(store, key), timeout=6)
    assert await store.refresh_lease(lease) == 0


async def _absent(store: EtcdStore, key: str) -> bool:
    return await store.get(key) is None


async def test_view_follows_puts_and_deletes(store: EtcdStore, prefix: str) -> None:
    await store.commit(Txn().put(f"{prefix}/before", b"0"))
    view = ClusterView(store, prefix + "/")
    seen: list[tuple[str, str]] = []
    view.subscribe(lambda c: seen.append((c.kind, c.entry.key)))
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.synced.wait(), 5)
        assert f"{prefix}/before" in view.entries
        revision = await store.commit(Txn().put(f"{prefix}/k", b"1"))
        await view.wait_for(revision)
        assert view.entries[f"{prefix}/k"].value == b"1"
        revision = await store.commit(Txn().delete(f"{prefix}/k"))
        await view.wait_for(revision)
        assert f"{prefix}/k" not in view.entries
        assert ("delete", f"{prefix}/k") in seen
    finally:
        task.cancel()


async def test_the_view_keeps_up_while_the_event_loop_is_busy(
        store: EtcdStore, etcd: EtcdProcess, prefix: str) -> None:
    # a leader busy with thousands of agent streams turns its loop a few times a second;
    # the watch is read by a thread, so 300 commits do not need 300 turns to be seen
    view = ClusterView(store, prefix + "/")
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.synced.wait(), 5)

        def put_many() -> None:
            channel = grpc.insecure_channel(etcd.endpoint)
            kv = rpc_pb2_grpc.KVStub(channel)
            for index in range(300):
                kv.Put(rpc.PutRequest(key=f"{prefix}/k{index}".encode(), value=b"x"))
            channel.close()

        writer = threading.Thread(target=put_many)
        writer.start()
        turns = 0
        while sum(key.startswith(f"{prefix}/k") for key in view.entries) < 300:
            assert turns < 100, f"the view saw {len(view.entries)} of 300 in {turns} turns"
            time.sleep(0.05)  # noqa: ASYNC251 (each turn: 50 ms of other work, on purpose)
            await asyncio.sleep(0)
            turns += 1
        writer.join()
    finally:
        task.cancel()


async def test_view_resumes_after_etcd_restart_without_missing_changes(
    tmp_path: Path,
) -> None:
    etcd = EtcdProcess(tmp_path).start()
    store = EtcdStore([etcd.endpoint], timeout=2.0)
    writer = EtcdStore([etcd.endpoint], timeout=2.0)
    view = ClusterView(store, "/r/", retry_max=0.5)
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.synced.wait(), 5)
        await writer.commit(Txn().put("/r/a", b"1"))
        await async_eventually(_has(view, "/r/a"), timeout=5)
        etcd.stop()
        await async_eventually(_not_synced(view), timeout=10)
        with pytest.raises(Unavailable):
            await writer.commit(Txn().put("/r/b", b"lost"))
        etcd.start()
        # changes made while the view was away are replayed from its last revision
        await _retry(lambda: writer.commit(Txn().put("/r/b", b"2").delete("/r/a")))
        await async_eventually(_has(view, "/r/b"), timeout=10)
        assert "/r/a" not in view.entries
        assert view.resumes >= 1 and view.relists == 0
    finally:
        task.cancel()
        await store.close()
        await writer.close()
        etcd.stop()


async def test_view_relists_after_compaction(tmp_path: Path) -> None:
    etcd = EtcdProcess(tmp_path).start()
    store = EtcdStore([etcd.endpoint], timeout=2.0)
    writer = EtcdStore([etcd.endpoint], timeout=2.0)
    view = ClusterView(store, "/c/", retry_max=0.5)
    deleted: list[str] = []
    view.subscribe(lambda c: deleted.append(c.entry.key) if c.kind == "delete" else None)
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.synced.wait(), 5)
        await writer.commit(Txn().put("/c/gone", b"1"))
        await async_eventually(_has(view, "/c/gone"), timeout=5)
        # the view is away (its task stopped) while keys change and etcd compacts past them
        task.cancel()
        await writer.commit(Txn().delete("/c/gone").put("/c/new", b"2"))
        for i in range(3):
            revision = await writer.commit(Txn().put("/other", str(i).encode()))
        await writer.compact(revision)
        task = asyncio.create_task(view.run())
        await async_eventually(_has(view, "/c/new"), timeout=10)
        assert "/c/gone" not in view.entries and "/c/gone" in deleted
        assert view.relists >= 1
    finally:
        task.cancel()
        await store.close()
        await writer.close()
        etcd.stop()


async def test_watch_from_a_compacted_revision_says_so(store: EtcdStore, prefix: str) -> None:
    first = await store.commit(Txn().put(f"{prefix}/k", b"1"))
    last = await store.commit(Txn().put(f"{prefix}/k", b"2"))
    await store.compact(last)
    with pytest.raises(HistoryCompacted):
        async for _ in store.watch(prefix + "/", first):
            break


def _has(view: ClusterView, key: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return key in view.entries

    return check


def _not_synced(view: ClusterView):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return not view.synced.is_set()

    return check


async def _retry(action, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await action()
        except Unavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_dead_endpoint_is_left_for_the_next_one(etcd: EtcdProcess, prefix: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    store = EtcdStore([dead, etcd.endpoint], timeout=1.0)
    view = ClusterView(store, prefix + "/", retry_max=0.2)
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.synced.wait(), 10)
        assert store.endpoint == etcd.endpoint
        revision = await store.commit(Txn().put(f"{prefix}/k", b"1"))
        await view.wait_for(revision)
    finally:
        task.cancel()
        await store.delete_prefix(prefix + "/")
        await store.close()
