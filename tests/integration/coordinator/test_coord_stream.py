"""The agent stream between an in-process coordinator and in-process stream clients."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import grpc
from local_cluster.etcd import EtcdProcess

from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, types_pb2
from common.resources import Resources
from common.stream_commands import AgentCommand, StartInstance
from common.stream_convert import registration_to_pb
from common.stream_messages import Registration
from coordinator.app import Coordinator
from tests.e2e.simulated_agent import FakeRuntime
from tests.integration.coordinator.agents import start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.support import async_eventually

RUNNING = types_pb2.INSTANCE_STATE_RUNNING


async def deploy(admin: Any, replicas: int, unit: str = "web") -> None:
    await admin.PublishVersion(
        admin_pb2.PublishVersionRequest(
            spec=types_pb2.UnitSpec(
                apartment="shop",
                unit=unit,
                image="demo:1",
                service_port=9000,
                resources=types_pb2.Resources(cpu_millis=250, memory_bytes=64 << 20),
            ),
            version="1.0.0",
            changes=types_pb2.ChangeSet(features=["f"]),
        )
    )
    await admin.Deploy(
        admin_pb2.DeployRequest(apartment="shop", unit=unit, version="1.0.0", replicas=replicas)
    )


async def running(admin: Any, count: int) -> list[Any]:
    found = (await admin.ListInstances(admin_pb2.ListInstancesRequest())).instances
    return list(found) if len(found) == count and all(i.state == RUNNING for i in found) else []


def check(condition: Any):  # type: ignore[no-untyped-def]
    async def probe() -> Any:
        return condition()

    return probe


async def test_register_deploy_and_routes_on_every_host(
    coordinator: Coordinator, admin: Any
) -> None:
    agents = [start_agent([coordinator.config.listen], f"h{n}", f"127.0.0.{n + 1}") for n in (1, 2)]
    try:
        await async_eventually(
            check(lambda: all(a.stream.connected.is_set() for a in agents)), timeout=10
        )
        hosts = (await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts
        assert [(h.host_id, h.labels["rack"], list(h.enforceable)) for h in hosts] == [
            ("h1", "r1", ["cpu", "memory"]),
            ("h2", "r1", ["cpu", "memory"]),
        ]
        await deploy(admin, replicas=2)
        placed = await async_eventually(lambda: running(admin, 2), timeout=10)
        assert sorted(i.host_id for i in placed) == ["h1", "h2"]
        ids = {i.instance_id for i in placed}
        for agent in agents:
            await async_eventually(
                check(
                    lambda a=agent: (
                        {
                            s["server"]
                            for s in a.runtime.routes.get("shop/web", [])
                            if s["weight"] > 0
                        }
                        == ids
                    )
                ),
                timeout=5,
            )
            route = agent.runtime.routes["shop/web"]
            assert {s["address"] for s in route} == {"127.0.0.2", "127.0.0.3"}
    finally:
        for agent in agents:
            await agent.stop()


async def test_reconnect_resends_full_state_and_keeps_instances(
    etcd: EtcdProcess, prefix: str
) -> None:
    config = coordinator_config(etcd, prefix)
    first = Coordinator(config)
    await first.start()
    agent = start_agent([config.listen], "h1", "127.0.0.2")
    channel = grpc.aio.insecure_channel(config.listen)
    admin = admin_pb2_grpc.AdminStub(channel)
    try:
        await async_eventually(check(lambda: agent.stream.connected.is_set()), timeout=10)
        await deploy(admin, replicas=2)
        before = {
            i.instance_id for i in await async_eventually(lambda: running(admin, 2), timeout=10)
        }
        await first.stop()
        await async_eventually(check(lambda: not agent.stream.connected.is_set()), timeout=5)
        held = set(agent.runtime.instances)
        second = Coordinator(config)
        await second.start()
        try:
            await async_eventually(check(lambda: agent.stream.sessions == 2), timeout=15)
            after = {
                i.instance_id for i in await async_eventually(lambda: running(admin, 2), timeout=10)
            }
            assert after == before == held == set(agent.runtime.instances)
            starts = [c for c in agent.runtime.executed if isinstance(c, StartInstance)]
            assert len(starts) == 2  # the full state matched: nothing started again
        finally:
            await second.stop()
    finally:
        await agent.stop()
        await channel.close()


async def test_follower_redirects_the_agent_to_the_leader(
    coordinator: Coordinator, etcd: EtcdProcess, prefix: str
) -> None:
    follower = Coordinator(coordinator_config(etcd, prefix, name="c2"))
    await follower.start()
    agent = start_agent([follower.config.listen, coordinator.config.listen], "h1", "127.0.0.2")
    try:
        await async_eventually(check(lambda: agent.stream.connected.is_set()), timeout=10)
        assert agent.stream.coordinator_id == "c1"
        assert agent.stream.target == coordinator.config.listen
    finally:
        await agent.stop()
        await follower.stop()


class FailingRuntime(FakeRuntime):
    async def execute(self, command: AgentCommand) -> None:
        if isinstance(command, StartInstance):
            raise RuntimeError("image pull failed")
        await super().execute(command)


async def test_failed_commands_become_events(coordinator: Coordinator, admin: Any) -> None:
    agent = start_agent([coordinator.config.listen], "h1", "127.0.0.2",
                        runtime_type=FailingRuntime)
    try:
        await async_eventually(check(lambda: agent.stream.connected.is_set()), timeout=10)
        await deploy(admin, replicas=1)

        async def failed() -> list[Any]:
            events = [e async for e in admin.StreamEvents(admin_pb2.StreamEventsRequest())]
            return [e for e in events if e.type == "command.failed"]

        found = await async_eventually(failed, timeout=10)
        assert "image pull failed" in found[0].message and found[0].host_id == "h1"
    finally:
        await agent.stop()


async def test_reports_without_changes_write_nothing_to_etcd(
    coordinator: Coordinator, admin: Any, etcd: EtcdProcess, prefix: str
) -> None:
    agents = [
        start_agent([coordinator.config.listen], f"h{n}", f"127.0.0.{n + 1}") for n in (1, 2, 3)
    ]
    try:
        await async_eventually(
            check(lambda: all(a.stream.connected.is_set() for a in agents)), timeout=10
        )
        await deploy(admin, replicas=3)
        await async_eventually(lambda: running(admin, 3), timeout=10)
        await asyncio.sleep(1.0)  # let routes, statuses and events settle
        revisions = etcd.revisions(prefix + "/")
        reports = coordinator.agent_stream.reports
        # heartbeats and usage-only changes for a while: memory only, no etcd write
        for _ in range(10):
            for agent in agents:
                for inst in list(agent.runtime.instances.values()):
                    agent.runtime._set(replace(inst, usage={"cpu_cores": 0.1}))
            await asyncio.sleep(0.2)
        assert coordinator.agent_stream.reports > reports + 10
        assert etcd.revisions(prefix + "/") == revisions
        # they took the usage-only path, and the API shows the usage they carried
        assert len(coordinator.fleet.usage) == 3
        listed = (await admin.ListInstances(admin_pb2.ListInstancesRequest())).instances
        assert [round(i.usage.cpu_cores, 3) for i in listed] == [0.1] * 3
        # a real state change is written (once)
        agent = agents[0]
        iid, inst = next(iter(agent.runtime.instances.items()))
        agent.runtime._set(replace(inst, state="error", health_score=0.0, reason="crashed"))
        await async_eventually(check(lambda: etcd.revisions(prefix + "/") != revisions), timeout=5)
        changed = {k for k, v in etcd.revisions(prefix + "/").items() if revisions.get(k) != v}
        assert changed == {f"{prefix}/status/{iid}"}
        statuses = await async_eventually(lambda: _state_of(admin, iid, "crashed"), timeout=5)
        assert statuses
    finally:
        for agent in agents:
            await agent.stop()


async def _state_of(admin: Any, iid: str, reason: str) -> bool:
    found = (await admin.ListInstances(admin_pb2.ListInstancesRequest())).instances
    return any(
        i.instance_id == iid and i.reason == reason and i.state == types_pb2.INSTANCE_STATE_ERROR
        for i in found
    )


async def test_concurrent_placements_never_overcommit_a_host(coordinator: Coordinator,
                                                             admin: Any) -> None:
    agent = start_agent([coordinator.config.listen], "h1", "127.0.0.2", cpu=1.0)
    try:
        await async_eventually(check(lambda: agent.stream.connected.is_set()), timeout=10)
        for unit in ("a", "b"):
            await admin.PublishVersion(admin_pb2.PublishVersionRequest(
                spec=types_pb2.UnitSpec(apartment="shop", unit=unit, image="demo:1",
                                        resources=types_pb2.Resources(cpu_millis=750)),
                version="1.0.0", changes=types_pb2.ChangeSet(features=["f"])))
        # both decide on the same view of h1; the allocation compare-and-swap lets one win
        results = await asyncio.gather(*(
            admin.Deploy(admin_pb2.DeployRequest(apartment="shop", unit=unit, version="1.0.0"))
            for unit in ("a", "b")), return_exceptions=True)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(refused) == 1, results
        assert refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "insufficient cpu" in (refused[0].details() or "")
        hosts = (await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts
        assert hosts[0].allocated.cpu_millis == 750
        assert len(coordinator.state.instances) == 1
    finally:
        await agent.stop()


async def test_a_follower_holds_an_agent_that_lost_the_leader_until_the_next_one_leads(
    coordinator: Coordinator, etcd: EtcdProcess, prefix: str
) -> None:
    """Register naming the leader the agent lost: the follower that still names it (its
    lease has not run out) answers nothing until a leader is elected, then Registered when
    it is that leader; without the name it points at the leader at once."""
    follower = Coordinator(coordinator_config(etcd, prefix, name="c2"))
    await follower.start()
    old = coordinator.config.advertise
    register = registration_to_pb(Registration(
        "h1", "default", "127.0.0.2", Resources(cpu=1, memory=1 << 30), {}, ("cpu",), "test"))
    try:
        await async_eventually(check(lambda: follower.leadership.leader is not None
                                     and follower.leadership.leader.address == old), timeout=10)
        async with grpc.aio.insecure_channel(follower.config.listen) as channel:
            stub = agent_pb2_grpc.AgentStreamStub(channel)
            told = stub.Session()
            await told.write(agent_pb2.AgentMessage(register=register))
            answer = await asyncio.wait_for(told.read(), 5)
            assert answer.not_leader.leader_address == old
            told.cancel()

            register.unreachable_leader = old
            held = stub.Session()
            await held.write(agent_pb2.AgentMessage(register=register))
            first = asyncio.ensure_future(held.read())
            await asyncio.sleep(0.5)
            assert not first.done()  # held: the only leader it knows is the lost one
            await coordinator.stop()  # resigns: the follower is elected
            answer = await asyncio.wait_for(first, 10)
            assert answer.WhichOneof("body") == "registered", answer
            assert answer.registered.coordinator_id == "c2"
            held.cancel()
    finally:
        await follower.stop()
