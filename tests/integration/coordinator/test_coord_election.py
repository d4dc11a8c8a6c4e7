"""Leader election on a real etcd: one leader, fenced writes, fast handover."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from local_cluster.etcd import EtcdProcess

from coordinator.app import Coordinator
from coordinator.errors import NotLeader
from coordinator.leadership.election import LeaderElection
from coordinator.state.records import LeaderRecord
from coordinator.state.store import EtcdStore, Fence, Txn
from tests.integration.coordinator.conftest import coordinator_config
from tests.support import async_eventually


class Candidate:
    """An election plus a record of when it led."""

    def __init__(self, store: EtcdStore, key: str, name: str, ttl: int = 2) -> None:
        self.election = LeaderElection(
            store, key, LeaderRecord(name, f"{name}:1"), ttl=ttl, retry=0.1
        )
        self.fence: Fence | None = None
        self.elected = asyncio.Event()
        self.task = asyncio.create_task(self.election.run(self._lead))

    async def _lead(self, fence: Fence) -> None:
        self.fence = fence
        self.elected.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.elected.clear()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_one_leader_and_a_fast_handover_on_resign(store: EtcdStore, prefix: str) -> None:
    key = f"{prefix}/leader"
    a, b = Candidate(store, key, "a"), Candidate(store, key, "b")
    try:
        await async_eventually(_any_elected(a, b), timeout=5)
        leader, other = (a, b) if a.elected.is_set() else (b, a)
        await asyncio.sleep(0.5)
        assert not other.elected.is_set()
        started = time.monotonic()
        await leader.election.resign()
        await asyncio.wait_for(other.elected.wait(), 3)
        assert time.monotonic() - started < 1.5  # no wait for the TTL
    finally:
        await a.stop()
        await b.stop()


async def test_a_crashed_leader_is_replaced_within_the_ttl_and_fenced_out(
    store: EtcdStore, prefix: str, etcd: EtcdProcess
) -> None:
    key = f"{prefix}/leader"
    crashed_store = EtcdStore([etcd.endpoint], timeout=2)
    a = Candidate(crashed_store, key, "a", ttl=2)
    try:
        await asyncio.wait_for(a.elected.wait(), 5)
        old_fence = a.fence
        assert old_fence is not None
        # crash: the task dies without resigning; its lease just stops being refreshed
        a.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await a.task
        started = time.monotonic()
        b = Candidate(store, key, "b", ttl=2)
        try:
            await asyncio.wait_for(b.elected.wait(), 6)
            assert time.monotonic() - started < 5
            with pytest.raises(NotLeader):
                await store.commit(Txn().put(f"{prefix}/x", b"stale"), old_fence)
            assert b.fence is not None
            await store.commit(Txn().put(f"{prefix}/x", b"fresh"), b.fence)
        finally:
            await b.stop()
    finally:
        await crashed_store.close()


async def test_leader_steps_down_when_etcd_is_gone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    etcd = EtcdProcess(tmp_path).start()
    store = EtcdStore([etcd.endpoint], timeout=1)
    a = Candidate(store, "/e/leader", "a", ttl=2)
    try:
        await asyncio.wait_for(a.elected.wait(), 5)
        etcd.stop()
        # no refresh for most of a TTL: the leader gives up before another could win
        await async_eventually(_not_elected(a), timeout=4)
        assert not a.election.is_leader
        etcd.start()
        await asyncio.wait_for(a.elected.wait(), 15)
    finally:
        await a.stop()
        await store.close()
        etcd.stop()


def _any_elected(*candidates: Candidate):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return any(c.elected.is_set() for c in candidates)

    return check


def _not_elected(candidate: Candidate):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return not candidate.elected.is_set()

    return check


async def test_a_busy_event_loop_does_not_lose_the_lead(etcd: EtcdProcess, prefix: str) -> None:
    """The lease keeper thread refreshes while the loop is blocked longer than the TTL."""
    leader = Coordinator(coordinator_config(etcd, prefix, name="busy"))
    follower = Coordinator(coordinator_config(etcd, prefix, name="idle"))
    await leader.start()
    try:
        await async_eventually(_leads(leader), timeout=10)
        await follower.start()
        ttl = leader.config.leader_lease_ttl
        time.sleep(ttl * 1.5)  # noqa: ASYNC251  # blocks this loop (both coordinators) on purpose
        await asyncio.sleep(ttl)  # the follower campaigns; the key must still be held
        assert leader.leadership.is_leader and not follower.leadership.is_leader
    finally:
        await follower.stop()
        await leader.stop()


def _leads(coordinator: Coordinator):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return coordinator.leadership.is_leader

    return check
