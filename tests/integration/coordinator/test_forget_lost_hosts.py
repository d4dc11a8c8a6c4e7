"""Lost hosts leave etcd after forget_host_after, once their instances were placed elsewhere;
the wait is counted from the lost time stored in etcd, across a leader change; a host still
holding instances that cannot move is kept. Real etcd, in-process coordinators and agents."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from local_cluster.etcd import EtcdProcess

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from coordinator.app import Coordinator
from coordinator.fleet.idle import Collect
from coordinator.state.records import EventRecord
from coordinator.state.store import EtcdStore
from tests.integration.coordinator.agents import LocalAgent, start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_stream import RUNNING, check, deploy, running
from tests.support import async_eventually


async def _leading(c: Coordinator) -> None:
    await async_eventually(check(lambda: c.leadership.is_leader), timeout=10)


def _event(c: Coordinator, type_: str, host_id: str) -> EventRecord | None:
    found = [e for e in c.state.event_history() if e.type == type_ and e.host_id == host_id]
    return found[-1] if found else None


async def _keys_of(store: EtcdStore, prefix: str, host_id: str) -> list[str]:
    """Every key of the cluster that is about ``host_id``: named by it, or a record that
    says it is on it."""
    entries, _ = await store.list_prefix(prefix + "/")
    about = []
    for entry in entries:
        if "/events/" in entry.key:
            continue
        value = json.loads(entry.value) if entry.value.startswith(b"{") else {}
        if entry.key.endswith("/" + host_id) or value.get("host_id") == host_id:
            about.append(entry.key)
    return sorted(about)


def on_hosts(admin: Any, expected: list[str]) -> Any:
    """A check: the unit's instances all run, on exactly these hosts."""
    async def probe() -> list[Any]:
        found = await running(admin, len(expected))
        return found if sorted(i.host_id for i in found) == expected else []

    return probe


async def _stop_all(agents: list[LocalAgent], coordinators: list[Coordinator]) -> None:
    for agent in agents:
        await agent.stop()
    for c in coordinators:
        await c.stop()


@pytest.fixture
async def admin_of() -> AsyncIterator[Any]:
    channels: list[grpc.aio.Channel] = []

    def make(c: Coordinator) -> admin_pb2_grpc.AdminStub:
        channels.append(grpc.aio.insecure_channel(c.config.listen))
        return admin_pb2_grpc.AdminStub(channels[-1])

    yield make
    for channel in channels:
        await channel.close()


async def test_a_lost_host_is_forgotten_after_its_instances_moved_across_a_leader_change(
        etcd: EtcdProcess, prefix: str, store: EtcdStore, admin_of: Any) -> None:
    wait = 6.0
    first = Coordinator(coordinator_config(etcd, prefix, "c1", forget_host_after=wait))
    second = Coordinator(coordinator_config(etcd, prefix, "c2", forget_host_after=wait))
    listens = [first.config.listen, second.config.listen]
    agents: list[LocalAgent] = []
    try:
        await first.start()
        await _leading(first)
        await second.start()
        agents = [start_agent(listens, f"h{n}", f"127.0.0.{n + 1}") for n in (1, 2)]
        await async_eventually(
            check(lambda: all(a.stream.connected.is_set() for a in agents)), timeout=10)
        admin = admin_of(first)
        await deploy(admin, replicas=2)
        await async_eventually(on_hosts(admin, ["h1", "h2"]), timeout=10)

        await agents[0].stop()  # h1 goes silent for good
        await async_eventually(check(lambda: _event(first, "host.lost", "h1")), timeout=10)
        await async_eventually(on_hosts(admin, ["h2", "h2"]), timeout=10,
                               message="h1's instance placed again on h2")
        lost_at = first.state.hosts["h1"].value.status_changed_at  # what etcd says
        hosts = (await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts
        assert {h.host_id: h.status for h in hosts} == {"h1": "lost", "h2": "alive"}
        assert await _keys_of(store, prefix, "h1") == [f"{prefix}/hosts/h1"]

        # a leader change half-way through the wait must not restart it
        await asyncio.sleep(max(0.0, lost_at + wait / 2 - time.time()))
        await first.stop()
        await _leading(second)
        elected = time.time()
        forgotten = await async_eventually(
            check(lambda: _event(second, EventType.HOST_FORGOTTEN, "h1")), timeout=3 * wait)
        assert wait <= forgotten.time - lost_at < wait + 2.5, (lost_at, forgotten)
        assert forgotten.time < elected + wait  # counted from the lost time in etcd
        assert forgotten.details["lost_for"] and "no instance left" in forgotten.message
        assert await _keys_of(store, prefix, "h1") == []
        admin = admin_of(second)
        hosts = (await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts
        assert [h.host_id for h in hosts] == ["h2"]
        assert "h1" not in second.fleet.seen
    finally:
        await _stop_all(agents, [first, second])


async def test_a_host_whose_instances_cannot_move_is_kept_until_they_can(
        etcd: EtcdProcess, prefix: str, store: EtcdStore, admin_of: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "coordinator.fleet.forgetter")
    wait = 1.0
    c = Coordinator(coordinator_config(etcd, prefix, forget_host_after=wait))
    agents: list[LocalAgent] = []
    try:
        await c.start()
        await _leading(c)
        agents.append(start_agent([c.config.listen], "h1", "127.0.0.2"))
        await async_eventually(check(lambda: agents[0].stream.connected.is_set()), timeout=10)
        admin = admin_of(c)
        await deploy(admin, replicas=2)
        await async_eventually(lambda: running(admin, 2), timeout=10)

        await agents[0].stop()  # the building's only host: nowhere to move to
        await async_eventually(check(lambda: _event(c, "host.lost", "h1")), timeout=10)
        lost_at = c.state.hosts["h1"].value.status_changed_at
        await asyncio.sleep(max(0.0, lost_at + wait - time.time()) + 2.0)  # rounds past it
        kept = [r.getMessage() for r in caplog.records if "but is kept" in r.getMessage()]
        assert len(kept) == 1, kept  # said once, not every round
        assert "2 instance(s) are still placed on it" in kept[0]
        assert f"{prefix}/hosts/h1" in await _keys_of(store, prefix, "h1")
        assert _event(c, EventType.HOST_FORGOTTEN, "h1") is None
        assert len(c.state.instances_on("h1")) == 2

        # room appears: the instances move, then h1 goes
        agents.append(start_agent([c.config.listen], "h2", "127.0.0.3"))
        await async_eventually(on_hosts(admin, ["h2", "h2"]), timeout=15)
        await async_eventually(
            check(lambda: _event(c, EventType.HOST_FORGOTTEN, "h1")), timeout=10)
        assert await _keys_of(store, prefix, "h1") == []
    finally:
        await _stop_all(agents, [c])


async def test_a_crowd_of_one_off_registrations_leaves_etcd(
        etcd: EtcdProcess, prefix: str, store: EtcdStore, admin_of: Any) -> None:
    # more than half the building falls silent at once, which holds hosts with instances
    # as suspect; hosts that hold nothing are lost anyway, then forgotten
    c = Coordinator(coordinator_config(etcd, prefix, forget_host_after=1))
    agents: list[LocalAgent] = []
    try:
        await c.start()
        await _leading(c)
        agents.append(start_agent([c.config.listen], "real", "127.0.0.2"))
        await async_eventually(check(lambda: agents[0].stream.connected.is_set()), timeout=10)
        admin = admin_of(c)
        await deploy(admin, replicas=1)
        await async_eventually(on_hosts(admin, ["real"]), timeout=10)
        crowd = [start_agent([c.config.listen], f"once-{n}", f"127.0.1.{n + 1}")
                 for n in range(4)]
        await async_eventually(
            check(lambda: all(a.stream.connected.is_set() for a in crowd)), timeout=10)
        for agent in crowd:
            await agent.stop()
        await async_eventually(
            check(lambda: all(_event(c, EventType.HOST_FORGOTTEN, f"once-{n}")
                              for n in range(4))), timeout=15)
        for n in range(4):
            assert await _keys_of(store, prefix, f"once-{n}") == []
        hosts = (await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts
        assert [(h.host_id, h.status) for h in hosts] == [("real", "alive")]
        assert _event(c, "host.lost", "real") is None
    finally:
        await _stop_all(agents, [c])


async def test_a_collected_instance_of_a_lost_host_moves_still_collected_then_it_is_forgotten(
        etcd: EtcdProcess, prefix: str, store: EtcdStore, admin_of: Any) -> None:
    wait = 3.0
    c = Coordinator(coordinator_config(etcd, prefix, forget_host_after=wait))
    agents: list[LocalAgent] = []
    try:
        await c.start()
        await _leading(c)
        agents = [start_agent([c.config.listen], f"h{n}", f"127.0.0.{n + 1}") for n in (1, 2)]
        await async_eventually(
            check(lambda: all(a.stream.connected.is_set() for a in agents)), timeout=10)
        admin = admin_of(c)
        await deploy(admin, replicas=1)
        [placed] = await async_eventually(lambda: running(admin, 1), timeout=10)
        gone_id = placed.host_id
        other_id = "h2" if gone_id == "h1" else "h1"
        gone = agents[int(gone_id[1]) - 1]
        await c.idle.collect(Collect("shop", "web", (placed.instance_id,), 99.0, 60.0))
        assert c.state.instances[placed.instance_id].value.collected

        await gone.stop()  # its host goes silent for good, holding the collected instance
        await async_eventually(check(lambda: _event(c, "host.lost", gone_id)), timeout=10)
        lost_at = c.state.hosts[gone_id].value.status_changed_at
        # within the wait it stays there (the host may come back with the state backup)
        await asyncio.sleep(max(0.0, lost_at + wait - time.time() - 1.0))
        assert [r.instance_id for r in c.state.instances_on(gone_id)] == [
            placed.instance_id]
        moved = await async_eventually(
            check(lambda: _event(c, EventType.COLLECTED_MOVED.value, other_id)),
            timeout=3 * wait)
        assert moved.details["from_instance"] == placed.instance_id
        assert moved.details["from_host"] == gone_id
        assert "still collected" in moved.message and "state backup" in moved.message
        [record] = c.state.instances_on(other_id)
        assert record.collected and record.replaces == placed.instance_id
        await async_eventually(
            check(lambda: _event(c, EventType.HOST_FORGOTTEN, gone_id)), timeout=10)
        assert await _keys_of(store, prefix, gone_id) == []
        await asyncio.sleep(1.0)  # nothing started it on the other host
        found = (await admin.ListInstances(admin_pb2.ListInstancesRequest())).instances
        assert [(i.instance_id, i.host_id) for i in found] == [
            (record.instance_id, other_id)]
        assert found[0].state != RUNNING, found[0]
    finally:
        await _stop_all(agents, [c])
