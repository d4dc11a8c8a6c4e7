"""Apartment scope over real mutual TLS: a real coordinator with a private etcd, certificates
from `landlord certs` (`--apartments shop`), the real agent stream over an in-memory runtime.

An admin scoped to apartment ``shop`` publishes and deploys there, and sees or changes
nothing of apartment ``blog``, whatever it puts in a request: another apartment's unit or
rollout id under its own apartment, a dependency into ``blog``, a request about every
apartment. ``blog/db`` is blog's internal unit: no answer to the scoped admin names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from local_cluster.etcd import EtcdProcess

from agent.stream.session import CoordinatorStream, StreamSettings
from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from common.resources import Resources
from common.stream_messages import Registration
from common.transport import create_channel
from coordinator.app import Coordinator
from tests.e2e.simulated_agent import FakeRuntime
from tests.integration.coordinator.test_coord_mtls import Pki, certs, mtls_config, until

SECRET = "blog/db"
"""Blog's internal unit (blog/api depends on it); the shop admin must never see it."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    certs("init", str(root))
    for kind, name in (("coordinator", "c1"), ("admin", "root"), ("agent", "h1")):
        certs("issue", kind, name, "--ca-dir", str(root))
    certs("issue", "admin", "sam", "--ca-dir", str(root), "--apartments", "shop")
    yield Pki(root)


@pytest.fixture
async def coordinator(etcd: EtcdProcess, prefix: str, pki: Pki) -> AsyncIterator[Coordinator]:
    c = Coordinator(mtls_config(etcd, prefix, pki))
    await c.start()
    identity = Registration("h1", "default", "127.0.0.2", Resources(cpu=8, memory=8 << 30))
    stream = CoordinatorStream(FakeRuntime(identity, ("demo:1",), start_delay=0.01),
                               StreamSettings((c.config.listen,), tls=pki.tls("host-h1")))
    task = asyncio.create_task(stream.run())
    try:
        await until(lambda: c.leadership.is_leader and "h1" in c.state.hosts)
        yield c
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.stop()


def publish(apartment: str, unit: str, port: int, *dependencies: str
            ) -> admin_pb2.PublishVersionRequest:
    return admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(apartment=apartment, unit=unit, image="demo:1",
                                service_port=port, dependencies=list(dependencies),
                                resources=types_pb2.Resources(cpu_millis=100,
                                                              memory_bytes=32 << 20)),
        version="1.0.0")


def deploy(apartment: str, unit: str) -> admin_pb2.DeployRequest:
    return admin_pb2.DeployRequest(apartment=apartment, unit=unit, version="1.0.0")


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    return caught.value


def names(message: Any) -> set[str]:
    """Every ``apartment/unit`` an answer mentions (a unit field beside its apartment, or a
    qualified name in any string field)."""
    found: set[str] = set()
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                if hasattr(item, "ListFields"):
                    found |= names(item)
        elif field.type == field.TYPE_STRING and not field.is_repeated and "/" in value:
            found.add(value)
    apartment, unit = getattr(message, "apartment", ""), getattr(message, "unit", "")
    if apartment and unit and "/" not in unit:
        found.add(f"{apartment}/{unit}")
    return found


async def test_a_scoped_admin_reaches_only_its_apartment(coordinator: Coordinator,
                                                          pki: Pki) -> None:
    address = coordinator.config.listen
    async with create_channel(address, pki.tls("admin-root")) as r, \
            create_channel(address, pki.tls("admin-sam")) as s:
        root, sam = admin_pb2_grpc.AdminStub(r), admin_pb2_grpc.AdminStub(s)
        # the operator: blog/db runs, blog/api needs it, and shop/web is tied to blog/api
        await root.PublishVersion(publish("blog", "db", 9001))
        blog_rollout = (await root.Deploy(deploy("blog", "db"))).rollout.rollout_id
        await root.PublishVersion(publish("blog", "api", 9002, "db@^1"))
        await root.PublishVersion(publish("shop", "web", 9003, "blog/api@^1"))
        # the shop admin publishes and deploys in shop
        await sam.PublishVersion(publish("shop", "site", 9004))
        shop_rollout = (await sam.Deploy(deploy("shop", "site"))).rollout.rollout_id
        await until(lambda: {i.value.apartment for i in coordinator.state.instances.values()}
                    == {"blog", "shop"})

        # a dependency into blog is a change outside shop: refused, recorded
        for dependency in ("blog/db@^1", "blog/nothing@^9"):
            denied = await refusal(sam.PublishVersion(publish("shop", "x", 9005, dependency)))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, dependency
            assert denied.details().startswith(
                "admin/sam (apartments shop) may not call /landlord.v1.Admin/PublishVersion "
                "for apartment 'shop' with a dependency on 'blog/")
        assert ("shop", "x") not in coordinator.state.versions

        def audited() -> list[str]:
            return [e.details.get("error", "") for e in coordinator.state.event_history()
                    if e.type == str(EventType.AUDIT) and e.unit == "x"]

        await until(lambda: len(audited()) == 2)
        assert all("with a dependency on 'blog/" in text for text in audited())

        # the dependency graph: shop's edge into blog, not blog's own edges
        resolve = admin_pb2.ResolveDependenciesRequest(apartment="shop", unit="web",
                                                       version="1.0.0")
        everything = (await root.ResolveDependencies(resolve)).resolved
        assert {(e.required_by, e.unit) for e in everything} == {
            ("shop/web", "blog/api"), ("blog/api", SECRET)}
        shown = (await sam.ResolveDependencies(resolve)).resolved
        assert [(e.required_by, e.unit, e.version) for e in shown] == [
            ("shop/web", "blog/api", "1.0.0")]
        versions = await sam.ListVersions(admin_pb2.ListVersionsRequest(apartment="shop",
                                                                        unit="web"))
        assert [r.unit for r in versions.versions[0].resolved] == ["blog/api"]
        unit = await sam.GetUnit(admin_pb2.GetUnitRequest(apartment="shop", unit="web"))
        assert [r.unit for r in unit.latest.resolved] == ["blog/api"]

        # blog's rollout and unit under shop's name: not found, nothing changed
        by_id = admin_pb2.GetRolloutRequest(apartment="shop", unit="site",
                                            rollout_id=blog_rollout)
        assert (await refusal(sam.GetRollout(by_id))).code() == grpc.StatusCode.NOT_FOUND
        assert (await refusal(sam.WatchRollout(by_id))).code() == grpc.StatusCode.NOT_FOUND
        for call in (sam.ControlRollout(admin_pb2.ControlRolloutRequest(
                        apartment="shop", unit="db", action=admin_pb2.ROLLOUT_CONTROL_ABORT)),
                     sam.Rollback(admin_pb2.RollbackRequest(apartment="shop", unit="db")),
                     sam.Deploy(deploy("shop", "db"))):
            assert (await refusal(call)).code() == grpc.StatusCode.NOT_FOUND
        blog_now = await root.GetRollout(admin_pb2.GetRolloutRequest(apartment="blog",
                                                                     unit="db"))
        assert blog_now.rollout_id == blog_rollout
        rollouts = await sam.ListRollouts(admin_pb2.ListRolloutsRequest(apartment="shop",
                                                                        unit="site"))
        assert [r.rollout_id for r in rollouts.rollouts] == [shop_rollout]

        # blog's entry point (its service port on every host of the building): refused,
        # without naming the unit behind it
        await until(lambda: ("blog", "db") in coordinator.state.routes)
        await sam.PublishVersion(publish("shop", "clash", 9001))
        clash = await refusal(sam.Deploy(deploy("shop", "clash")))
        assert clash.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "service port 9001, the entry point of a unit of another apartment" in \
            clash.details() and "db" not in clash.details()

        # blog by name, or every apartment: refused before the servicer
        for call in (sam.ListUnits(admin_pb2.ListUnitsRequest(apartment="blog")),
                     sam.ListUnits(admin_pb2.ListUnitsRequest()),
                     sam.ListInstances(admin_pb2.ListInstancesRequest(host_id="h1")),
                     sam.StreamEvents(admin_pb2.StreamEventsRequest()),
                     sam.Deploy(deploy("blog", "db")),
                     sam.RunGarbageCollection(admin_pb2.RunGarbageCollectionRequest())):
            assert (await refusal(call)).code() == grpc.StatusCode.PERMISSION_DENIED

        # what shop's reads answer: shop's units (and the dependency shop/web declares)
        units = await sam.ListUnits(admin_pb2.ListUnitsRequest(apartment="shop"))
        assert {f"{u.apartment}/{u.unit}" for u in units.units} == {
            "shop/web", "shop/site", "shop/clash"}
        instances = await sam.ListInstances(admin_pb2.ListInstancesRequest(
            host_id="h1", apartment="shop"))
        assert {i.apartment for i in instances.instances} == {"shop"}
        events = [e async for e in sam.StreamEvents(admin_pb2.StreamEventsRequest(
            apartment="shop"))]
        assert events and {e.apartment for e in events} == {"shop"}
        hosts = await sam.ListHosts(admin_pb2.ListHostsRequest())
        assert [h.host_id for h in hosts.hosts] == ["h1"]
        answers = [units, instances, hosts, versions, unit, rollouts, *events,
                   *(await sam.ResolveDependencies(resolve)).resolved]
        for answer in answers:
            assert not {n for n in names(answer) if n.startswith("blog/")} - {"blog/api"}, \
                answer
