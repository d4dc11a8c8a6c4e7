"""Apartment scope over real mutual TLS: a real coordinator with a private etcd, certificates
from `landlord certs` (`--apartments shop`), the real agent stream over an in-memory runtime.

An admin scoped to apartment ``shop`` publishes and deploys there, and sees or changes
nothing of apartment ``blog``, whatever it puts in a request: another apartment's unit or
rollout id under its own apartment, a dependency into ``blog``, a request about every
apartment. ``blog/db`` is blog's internal unit: no answer to the scoped admin names it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
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


QUALIFIED = re.compile(r"[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*")


def names(message: Any) -> set[str]:
    """Every ``apartment/unit`` an answer mentions: a unit field beside its apartment, or a
    qualified name anywhere in a string (messages, map values included)."""
    found: set[str] = set()
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            texts = [str(text) for pair in value.items() for text in pair]
        elif field.type == field.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                found |= names(item)
            continue
        else:
            texts = [str(v) for v in (value if field.is_repeated else [value])]
        found |= {name for text in texts for name in QUALIFIED.findall(text)}
    apartment, unit = getattr(message, "apartment", ""), getattr(message, "unit", "")
    if apartment and unit and "/" not in unit:
        found.add(f"{apartment}/{unit}")
    return found


@dataclass
class Fleet:
    """Set up by the operator (admin/root) and the shop admin (admin/sam, scoped to shop):
    blog/db runs, blog/api needs it, shop/web is tied to blog/api (published by root), and
    shop/site is sam's, deployed."""

    coordinator: Coordinator
    root: admin_pb2_grpc.AdminStub
    sam: admin_pb2_grpc.AdminStub
    blog_rollout: str
    shop_rollout: str


@pytest.fixture
async def fleet(etcd: EtcdProcess, prefix: str, pki: Pki) -> AsyncIterator[Fleet]:
    c = Coordinator(mtls_config(etcd, prefix, pki))
    await c.start()
    identity = Registration("h1", "default", "127.0.0.2", Resources(cpu=8, memory=8 << 30))
    stream = CoordinatorStream(FakeRuntime(identity, ("demo:1",), start_delay=0.01),
                               StreamSettings((c.config.listen,), tls=pki.tls("host-h1")))
    task = asyncio.create_task(stream.run())
    try:
        await until(lambda: c.leadership.is_leader and "h1" in c.state.hosts)
        async with create_channel(c.config.listen, pki.tls("admin-root")) as r, \
                create_channel(c.config.listen, pki.tls("admin-sam")) as s:
            root, sam = admin_pb2_grpc.AdminStub(r), admin_pb2_grpc.AdminStub(s)
            await root.PublishVersion(publish("blog", "db", 9001))
            blog_rollout = (await root.Deploy(deploy("blog", "db"))).rollout.rollout_id
            await root.PublishVersion(publish("blog", "api", 9002, "db@^1"))
            await root.PublishVersion(publish("shop", "web", 9003, "blog/api@^1"))
            await sam.PublishVersion(publish("shop", "site", 9004))
            shop_rollout = (await sam.Deploy(deploy("shop", "site"))).rollout.rollout_id
            await until(lambda: {i.value.apartment for i in c.state.instances.values()}
                        == {"blog", "shop"})
            yield Fleet(c, root, sam, blog_rollout, shop_rollout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.stop()


async def test_a_dependency_into_another_apartment_is_refused_and_recorded(
        fleet: Fleet) -> None:
    for dependency in ("blog/api@^1", "blog/nothing@^9"):  # a tie, and a probe
        denied = await refusal(fleet.sam.PublishVersion(
            publish("shop", "x", 9005, dependency)))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, dependency
        assert denied.details().startswith(
            "admin/sam (apartments shop) may not call /landlord.v1.Admin/PublishVersion "
            "for apartment 'shop' with a dependency on 'blog/")
    assert ("shop", "x") not in fleet.coordinator.state.versions

    def audited() -> list[str]:
        return [e.details.get("error", "") for e in fleet.coordinator.state.event_history()
                if e.type == str(EventType.AUDIT) and e.unit == "x"]

    await until(lambda: len(audited()) == 2)
    assert all("with a dependency on 'blog/" in text for text in audited())


RESOLVE = admin_pb2.ResolveDependenciesRequest(apartment="shop", unit="web", version="1.0.0")


async def test_the_dependency_graph_shows_shops_edges_not_blogs(fleet: Fleet) -> None:
    everything = (await fleet.root.ResolveDependencies(RESOLVE)).resolved
    assert {(e.required_by, e.unit) for e in everything} == {
        ("shop/web", "blog/api"), ("blog/api", SECRET)}
    shown = (await fleet.sam.ResolveDependencies(RESOLVE)).resolved
    assert [(e.required_by, e.unit, e.version) for e in shown] == [
        ("shop/web", "blog/api", "1.0.0")]
    versions = await fleet.sam.ListVersions(admin_pb2.ListVersionsRequest(apartment="shop",
                                                                          unit="web"))
    assert [r.unit for r in versions.versions[0].resolved] == ["blog/api"]
    unit = await fleet.sam.GetUnit(admin_pb2.GetUnitRequest(apartment="shop", unit="web"))
    assert [r.unit for r in unit.latest.resolved] == ["blog/api"]
    root_view = await fleet.root.GetUnit(admin_pb2.GetUnitRequest(apartment="shop",
                                                                  unit="web"))
    assert [r.unit for r in root_view.latest.resolved] == ["blog/api", SECRET]


async def test_blogs_rollout_or_unit_under_shops_name_is_not_found(fleet: Fleet) -> None:
    sam = fleet.sam
    by_id = admin_pb2.GetRolloutRequest(apartment="shop", unit="site",
                                        rollout_id=fleet.blog_rollout)
    assert (await refusal(sam.GetRollout(by_id))).code() == grpc.StatusCode.NOT_FOUND
    assert (await refusal(sam.WatchRollout(by_id))).code() == grpc.StatusCode.NOT_FOUND
    for call in (sam.ControlRollout(admin_pb2.ControlRolloutRequest(
                    apartment="shop", unit="db", action=admin_pb2.ROLLOUT_CONTROL_ABORT)),
                 sam.Rollback(admin_pb2.RollbackRequest(apartment="shop", unit="db")),
                 sam.Deploy(deploy("shop", "db"))):
        assert (await refusal(call)).code() == grpc.StatusCode.NOT_FOUND
    rollouts = await sam.ListRollouts(admin_pb2.ListRolloutsRequest(apartment="shop",
                                                                    unit="site"))
    assert [r.rollout_id for r in rollouts.rollouts] == [fleet.shop_rollout]


async def test_another_apartments_entry_point_is_refused_without_naming_it(
        fleet: Fleet) -> None:
    """Every host of the building binds blog/db's service port; a shop unit on the same
    port would take part of blog's connections (HAProxy binds with SO_REUSEPORT)."""
    await until(lambda: ("blog", "db") in fleet.coordinator.state.routes)
    await fleet.sam.PublishVersion(publish("shop", "clash", 9001))
    clash = await refusal(fleet.sam.Deploy(deploy("shop", "clash")))
    assert clash.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "service port 9001, the entry point of a unit of another apartment" in \
        clash.details() and "db" not in clash.details()
    assert ("shop", "clash") not in fleet.coordinator.state.rollouts


async def test_requests_about_blog_or_every_apartment_are_refused(fleet: Fleet) -> None:
    sam = fleet.sam
    for call in (sam.ListUnits(admin_pb2.ListUnitsRequest(apartment="blog")),
                 sam.ListUnits(admin_pb2.ListUnitsRequest()),
                 sam.ListInstances(admin_pb2.ListInstancesRequest(host_id="h1")),
                 sam.StreamEvents(admin_pb2.StreamEventsRequest()),
                 sam.Deploy(deploy("blog", "db")),
                 sam.RunGarbageCollection(admin_pb2.RunGarbageCollectionRequest())):
        assert (await refusal(call)).code() == grpc.StatusCode.PERMISSION_DENIED


async def test_no_answer_to_shop_names_blogs_own_units(fleet: Fleet) -> None:
    sam = fleet.sam
    units = await sam.ListUnits(admin_pb2.ListUnitsRequest(apartment="shop"))
    assert {f"{u.apartment}/{u.unit}" for u in units.units} == {"shop/web", "shop/site"}
    instances = await sam.ListInstances(admin_pb2.ListInstancesRequest(
        host_id="h1", apartment="shop"))
    assert {i.apartment for i in instances.instances} == {"shop"}
    events = [e async for e in sam.StreamEvents(admin_pb2.StreamEventsRequest(
        apartment="shop"))]
    assert events and {e.apartment for e in events} == {"shop"}
    hosts = await sam.ListHosts(admin_pb2.ListHostsRequest())
    assert [h.host_id for h in hosts.hosts] == ["h1"]
    watch = sam.WatchRollout(admin_pb2.GetRolloutRequest(apartment="shop", unit="site"))
    watched = await watch.read()
    watch.cancel()
    answers = [units, instances, hosts, watched, *events,
               await sam.ResolveDependencies(RESOLVE),
               await sam.ListVersions(admin_pb2.ListVersionsRequest(apartment="shop",
                                                                    unit="web")),
               *[await sam.GetUnit(admin_pb2.GetUnitRequest(apartment="shop", unit=u))
                 for u in ("web", "site")],
               await sam.ListRollouts(admin_pb2.ListRolloutsRequest(apartment="shop",
                                                                    unit="site"))]
    for answer in answers:
        shown = {n for n in names(answer) if n.startswith("blog/")}
        assert shown <= {"blog/api"}, answer  # the tie shop/web declares
