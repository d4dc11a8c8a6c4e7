"""Stop, delete and scale on a real coordinator over mutual TLS, a private etcd and in-process
agents: scale up places and starts instances (and a scale that does not fit is refused naming
the short resource), scale down frees capacity, both are refused during a rollout; stop
leaves a stopped unit with its versions and history (idempotent, and a deploy starts it
again); delete is refused while the unit runs or a running unit depends on it, then removes
every record; bad input, unknown units and a scoped admin outside its apartments are refused;
every call is audited."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from local_cluster.etcd import EtcdProcess

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from common.transport import create_channel
from coordinator.app import Coordinator
from tests.integration.coordinator.agents import start_agent
from tests.integration.coordinator.test_coord_mtls import Pki, certs, until
from tests.integration.coordinator.test_host_cordon_flow import config, refused

CPU = 250
"""cpu millis of every instance; each of the two hosts has 1 cpu."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    root = tmp_path_factory.mktemp("pki")
    certs("init", str(root))
    for kind, name in (("coordinator", "c1"), ("admin", "root"), ("agent", "h1"),
                       ("agent", "h2")):
        certs("issue", kind, name, "--ca-dir", str(root))
    certs("issue", "admin", "sam", "--ca-dir", str(root), "--apartments", "shop")
    yield Pki(root)


async def publish(admin: Any, unit: str, version: str, port: int, deps: tuple[str, ...] = ()
                  ) -> None:
    await admin.PublishVersion(admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(apartment="shop", unit=unit, image="demo:1", service_port=port,
                                dependencies=list(deps),
                                resources=types_pb2.Resources(cpu_millis=CPU,
                                                              memory_bytes=32 << 20)),
        version=version))


def deploy(unit: str, version: str, replicas: int, **settings: Any) -> Any:
    return admin_pb2.DeployRequest(apartment="shop", unit=unit, version=version,
                                   replicas=replicas, **settings)


def ref(unit: str, apartment: str = "shop") -> dict[str, str]:
    return {"apartment": apartment, "unit": unit}


async def test_scale_stop_and_delete(etcd: EtcdProcess, prefix: str, pki: Pki) -> None:
    settings = config(etcd, prefix, pki, "c1")
    c1 = Coordinator(settings)
    await c1.start()
    agents = [start_agent([settings.listen], host, f"127.0.0.{n}", cpu=1.0,
                          tls=pki.tls(f"host-{host}")) for n, host in ((2, "h1"), (3, "h2"))]

    def unit(name: str) -> Any:
        found = c1.state.units.get(("shop", name))
        return found.value if found is not None else None

    def instances(name: str) -> list[Any]:
        return [i.value for i in c1.state.instances.values() if i.value.unit == name]

    def running(name: str, count: int) -> bool:
        found = instances(name)
        return (len(found) == count and getattr(unit(name), "state", "") == "running"
                and all((seen := c1.known.known_state(i.instance_id)) is not None
                        and seen.routable for i in found))

    def allocated() -> set[str]:
        return {iid for host in ("h1", "h2") for iid in c1.state.allocation_of(host)[0]}

    try:
        await until(lambda: c1.leadership.is_leader and {"h1", "h2"} <= set(c1.fleet.sessions))
        async with create_channel(settings.listen, pki.tls("admin-root")) as r, \
                create_channel(settings.listen, pki.tls("admin-sam")) as s:
            root, sam = admin_pb2_grpc.AdminStub(r), admin_pb2_grpc.AdminStub(s)
            await publish(root, "db", "1.0.0", 9101)
            await publish(root, "db", "1.1.0", 9101)
            await publish(root, "web", "1.0.0", 9102, deps=("db@^1.0.0",))
            await root.Deploy(deploy("db", "1.0.0", 2))
            await until(lambda: running("db", 2))
            await root.Deploy(deploy("web", "1.0.0", 1))
            await until(lambda: running("web", 1))

            # bad input, unknown unit, scope
            for request, code, words in (
                (admin_pb2.ScaleUnitRequest(**ref("db"), replicas=0),
                 grpc.StatusCode.INVALID_ARGUMENT, "landlord units stop"),
                (admin_pb2.ScaleUnitRequest(**ref("db"), replicas=1001),
                 grpc.StatusCode.INVALID_ARGUMENT, "from 1 to 1000"),
                (admin_pb2.ScaleUnitRequest(**ref("db", ""), replicas=2),
                 grpc.StatusCode.INVALID_ARGUMENT, "apartment and unit are required"),
                (admin_pb2.ScaleUnitRequest(**ref("Bad Name"), replicas=2),
                 grpc.StatusCode.INVALID_ARGUMENT, "is not valid"),
                (admin_pb2.ScaleUnitRequest(**ref("nope"), replicas=2),
                 grpc.StatusCode.NOT_FOUND, "unit shop/nope does not exist"),
            ):
                error = await refused(root.ScaleUnit(request))
                assert (error.code(), words in (error.details() or "")) == (code, True), \
                    error.details()
            for call in (root.StopUnit(admin_pb2.StopUnitRequest(**ref("nope"))),
                         root.DeleteUnit(admin_pb2.DeleteUnitRequest(**ref("nope")))):
                assert (await refused(call)).code() == grpc.StatusCode.NOT_FOUND
            denied = await refused(sam.StopUnit(admin_pb2.StopUnitRequest(**ref("db", "blog"))))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

            # scale up by the scoped admin of shop; then too big: 2 cpu hold 8 instances
            up = await sam.ScaleUnit(admin_pb2.ScaleUnitRequest(**ref("db"), replicas=4))
            assert (up.changed, len(up.started), up.unit.instances) == (True, 2, 4)
            await until(lambda: running("db", 4))
            assert unit("db").replicas == 4
            same = await root.ScaleUnit(admin_pb2.ScaleUnitRequest(**ref("db"), replicas=4))
            assert not same.changed and not same.started and not same.stopped
            big = await refused(root.ScaleUnit(admin_pb2.ScaleUnitRequest(**ref("db"),
                                                                         replicas=8)))
            assert big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, big.details()
            assert "cpu" in (big.details() or ""), big.details()
            assert len(instances("db")) == 4 and unit("db").replicas == 4  # nothing written

            # scale down: instances stopped, capacity freed
            down = await root.ScaleUnit(admin_pb2.ScaleUnitRequest(**ref("db"), replicas=1))
            assert (down.changed, len(down.stopped), down.unit.instances) == (True, 3, 1)
            await until(lambda: running("db", 1))
            assert not set(down.stopped) & allocated()

            # during a rollout all three are refused, naming it
            rollout = (await root.Deploy(deploy(
                "db", "1.1.0", 1, strategy=types_pb2.STRATEGY_CANARY,
                canary=types_pb2.CanarySettings(steps=[50, 100])))).rollout
            for call in (root.ScaleUnit(admin_pb2.ScaleUnitRequest(**ref("db"), replicas=2)),
                         root.StopUnit(admin_pb2.StopUnitRequest(**ref("db"))),
                         root.DeleteUnit(admin_pb2.DeleteUnitRequest(**ref("db")))):
                error = await refused(call)
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert rollout.rollout_id in (error.details() or ""), error.details()
            await root.ControlRollout(admin_pb2.ControlRolloutRequest(
                **ref("db"), action=admin_pb2.ROLLOUT_CONTROL_ABORT))
            await until(lambda: c1.rollouts.records.active("shop", "db") is None
                        and running("db", 1), timeout=20)

            # delete refused while running; stop (idempotent), versions kept
            error = await refused(root.DeleteUnit(admin_pb2.DeleteUnitRequest(**ref("db"))))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "stop it first" in (error.details() or "")
            await root.ScaleUnit(admin_pb2.ScaleUnitRequest(**ref("db"), replicas=3))
            await until(lambda: running("db", 3))  # two hosts: one runs two of them
            stop = await root.StopUnit(admin_pb2.StopUnitRequest(**ref("db")))
            assert (stop.changed, stop.unit.state, len(stop.stopped)) == (True, "stopped", 3)
            assert stop.unit.instances == 0  # removed with the record, in one transaction
            await until(lambda: not instances("db"))
            assert not {iid for iid in allocated() if iid.startswith("db-")}, allocated()
            again = await root.StopUnit(admin_pb2.StopUnitRequest(**ref("db")))
            assert not again.changed and again.unit.state == "stopped"
            assert set(c1.state.versions[("shop", "db")]) == {"1.0.0", "1.1.0"}
            assert len(c1.state.rollouts[("shop", "db")]) == 2
            scale = await refused(root.ScaleUnit(admin_pb2.ScaleUnitRequest(**ref("db"),
                                                                           replicas=2)))
            assert scale.code() == grpc.StatusCode.FAILED_PRECONDITION, scale.details()
            for call in (root.Rollback(admin_pb2.RollbackRequest(**ref("db"),
                                                                 to_version="1.0.0")),
                         root.ControlRollout(admin_pb2.ControlRolloutRequest(
                             **ref("db"), action=admin_pb2.ROLLOUT_CONTROL_RETRY))):
                error = await refused(call)
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "is stopped" in (error.details() or ""), error.details()

            # a deploy starts a stopped unit again like a first one
            await root.Deploy(deploy("db", "1.1.0", 1))
            await until(lambda: running("db", 1) and unit("db").stable_version == "1.1.0")
            await root.StopUnit(admin_pb2.StopUnitRequest(**ref("db")))
            await until(lambda: not instances("db"))

            # delete refused, naming the running unit that depends on it
            error = await refused(root.DeleteUnit(admin_pb2.DeleteUnitRequest(**ref("db"))))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "running units depend on it: shop/web" in (error.details() or "")
            await root.StopUnit(admin_pb2.StopUnitRequest(**ref("web")))
            for name in ("web", "db"):
                done = await root.DeleteUnit(admin_pb2.DeleteUnitRequest(**ref(name)))
                assert done.changed
            await until(lambda: not any(key[1] in ("db", "web") for key in c1.state.units))
            assert not c1.state.versions.get(("shop", "db"))
            assert not c1.state.rollouts.get(("shop", "db"))
            assert ("shop", "db") not in c1.state.routes
            assert ("shop", "db") not in c1.state.active_rollouts
            assert not allocated()
            assert (await refused(root.DeleteUnit(admin_pb2.DeleteUnitRequest(
                **ref("db"))))).code() == grpc.StatusCode.NOT_FOUND
            listed = await root.ListUnits(admin_pb2.ListUnitsRequest(apartment="shop"))
            assert [u.unit for u in listed.units] == []

        def history(type_: str) -> list[Any]:
            return [e for e in c1.state.event_history() if e.type == type_]

        await until(lambda: len(history(EventType.UNIT_DELETED)) == 2)
        assert [e.details["replicas"] for e in history(EventType.UNIT_SCALED)] == ["4", "1", "3"]
        assert [e.unit for e in history(EventType.UNIT_STOPPED)] == ["db", "db", "web"]
        methods = [(e.details["method"], e.details["caller"], e.details["outcome"])
                   for e in history(EventType.AUDIT)
                   if e.details["method"] in ("StopUnit", "DeleteUnit", "ScaleUnit")]
        assert ("ScaleUnit", "admin/sam (apartments shop)", "OK") in methods
        assert ("StopUnit", "admin/sam (apartments shop)", "PERMISSION_DENIED") in methods
        assert ("DeleteUnit", "admin/root", "FAILED_PRECONDITION") in methods
        assert ("DeleteUnit", "admin/root", "OK") in methods
    finally:
        for agent in agents:
            await agent.stop()
        await c1.stop()
