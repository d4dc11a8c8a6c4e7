"""Deploys of hundreds of replicas against a real etcd at its default --max-txn-ops (128),
with in-process coordinators and simulated agents: 300 replicas (then a scale to 390) are
placed in several transactions, none over-commits a host and every one ends running; and
when the leader stops between two of those transactions, the new leader resumes the rollout
and ends with exactly the asked count (nothing lost, nothing placed twice)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from local_cluster.etcd import EtcdProcess

from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from coordinator.app import Coordinator
from coordinator.state.store import MAX_TXN_OPS, Txn
from tests.integration.coordinator.agents import LocalAgent, start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_mtls import until

REPLICAS = 300
HOSTS = 25
"""Simulated hosts of 4 cpu: 16 instances of 250 millis each, 400 in all."""


async def _publish_and_deploy(listen: str) -> None:
    async with grpc.aio.insecure_channel(listen) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.PublishVersion(admin_pb2.PublishVersionRequest(
            spec=types_pb2.UnitSpec(apartment="shop", unit="wide", image="demo:1",
                                    service_port=9301,
                                    resources=types_pb2.Resources(cpu_millis=250,
                                                                  memory_bytes=32 << 20)),
            version="1.0.0"))
        await admin.Deploy(admin_pb2.DeployRequest(apartment="shop", unit="wide",
                                                   version="1.0.0", replicas=REPLICAS))


def _agents(coordinators: list[str]) -> list[LocalAgent]:
    return [start_agent(coordinators, f"pb-h{n:02d}", "127.0.0.1", cpu=4.0)
            for n in range(HOSTS)]


def _running(c: Coordinator, count: int = REPLICAS) -> bool:
    found = [i.value for i in c.state.instances.values() if i.value.unit == "wide"]
    unit = c.state.units.get(("shop", "wide"))
    return (len(found) == count and unit is not None and unit.value.state == "running"
            and all((seen := c.known.known_state(i.instance_id)) is not None and seen.routable
                    for i in found))


def _check_ledgers(c: Coordinator, count: int = REPLICAS) -> None:
    """Every instance is in its host's ledger once, and no host holds more than it has."""
    instances = {i.value.instance_id: i.value for i in c.state.instances.values()}
    assert len(instances) == count
    ledgered: list[str] = []
    for n in range(HOSTS):
        allocations, _ = c.state.allocation_of(f"pb-h{n:02d}")
        ledgered += allocations
        assert sum(a.resources.cpu for a in allocations.values()) <= 4.0
        assert len({a.port for a in allocations.values()}) == len(allocations)
    assert sorted(ledgered) == sorted(instances)


async def _stop(agents: list[LocalAgent], *coordinators: Coordinator) -> None:
    await asyncio.gather(*(a.stop() for a in agents))
    for c in coordinators:
        await c.stop()


async def test_three_hundred_replicas_within_the_default_txn_limit(
        etcd: EtcdProcess, prefix: str) -> None:
    c1 = Coordinator(coordinator_config(etcd, prefix, "c1"))
    assert c1.config.etcd_max_txn_ops == MAX_TXN_OPS == 128  # etcd runs with its default
    await c1.start()
    agents = _agents([c1.config.listen])
    try:
        await until(lambda: c1.leadership.is_leader and len(c1.fleet.sessions) == HOSTS)
        await _publish_and_deploy(c1.config.listen)
        await until(lambda: _running(c1), timeout=90)
        _check_ledgers(c1)
        async with grpc.aio.insecure_channel(c1.config.listen) as channel:
            scaled = await admin_pb2_grpc.AdminStub(channel).ScaleUnit(
                admin_pb2.ScaleUnitRequest(apartment="shop", unit="wide", replicas=390))
        assert (len(scaled.started), scaled.unit.instances) == (90, 390)
        await until(lambda: _running(c1, 390), timeout=90)
        _check_ledgers(c1, 390)
    finally:
        await _stop(agents, c1)


def _hold_after(c: Coordinator, batches: int) -> tuple[asyncio.Event, list[int]]:
    """Make ``c``'s writes stop before its placement's ``batches + 1``-th transaction (the
    first carries the rollout record); returns the event set once it holds, and the
    recorded batch sizes."""
    holding, sizes = asyncio.Event(), list[int]()
    commit: Callable[..., Awaitable[int]] = c.writes.commit
    instance_key = c.layout.instance("")

    async def held(txn: Txn, wait: bool = True) -> int:
        if any(k.startswith(instance_key) for k in txn.puts):
            if len(sizes) == batches:
                holding.set()
                await asyncio.Event().wait()  # until the coordinator stops
            sizes.append(sum(1 for k in txn.puts if k.startswith(instance_key)))
        return await commit(txn, wait)

    c.writes.commit = held  # type: ignore[method-assign]
    return holding, sizes


async def test_a_leader_stopped_mid_placement_leaves_the_new_one_the_exact_count(
        etcd: EtcdProcess, prefix: str) -> None:
    c1 = Coordinator(coordinator_config(etcd, prefix, "c1"))
    c2 = Coordinator(coordinator_config(etcd, prefix, "c2"))
    await c1.start()
    await until(lambda: c1.leadership.is_leader)
    await c2.start()
    agents = _agents([c1.config.listen, c2.config.listen])
    stopped: list[Coordinator] = []
    try:
        await until(lambda: len(c1.fleet.sessions) == HOSTS)
        holding, sizes = _hold_after(c1, batches=2)
        deploy: asyncio.Task[Any] = asyncio.create_task(_publish_and_deploy(c1.config.listen))
        await asyncio.wait_for(holding.wait(), 30)
        placed = sum(sizes)
        assert 0 < placed < REPLICAS and c1.state.rollouts.get(("shop", "wide"))
        await c1.stop()
        stopped.append(c1)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await deploy  # the caller may see the leader go: the rollout carries on
        await until(lambda: c2.leadership.is_leader, timeout=15)
        await until(lambda: _running(c2), timeout=90)
        _check_ledgers(c2)
        records = [r for r in c2.state.rollouts[("shop", "wide")].values()]
        assert len(records) == 1  # one rollout, resumed, not a second deploy
    finally:
        await _stop(agents, *(c for c in (c1, c2) if c not in stopped))
