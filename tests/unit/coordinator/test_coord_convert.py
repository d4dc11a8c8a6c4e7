"""The protobuf edge: what the coordinator sends is what the agent's stream reads (one
set of converters, common.stream_convert, at both ends)."""

from __future__ import annotations

import dataclasses

import pytest

from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2, agent_pb2, types_pb2
from common.latency import LatencySketch
from common.proto_values import latency_from_pb, latency_to_pb, resources_from_pb
from common.resources import Resources
from common.stream_commands import Command, SetRoute, StartInstance, StopInstance
from common.stream_convert import command_from_pb, command_to_pb, registration_from_pb
from common.stream_messages import RouteServer
from common.unit_spec import REDACTED, HealthCheck, StateMode, UnitSpec
from common.versions import VersionTag
from coordinator.api.convert_admin import publish_from_pb, version_to_pb
from coordinator.fleet.start_commands import start_command
from coordinator.state.records import InstanceRecord, VersionRecord


def version_record(port: int = 0) -> VersionRecord:
    spec = UnitSpec("shop", "web", "1.0.0", "demo:1", port, ("serve", "--fast"), {"A": "1"},
                    HealthCheck("/healthz", ("check", "--quick"), 3.0, 1.0, 4),
                    Resources(cpu=0.5, memory=256 << 20), ("db@^1.0.0",),
                    service_port=18080, state_mode=StateMode.SNAPSHOT, idle_timeout_s=600,
                    warmup_s=2.5, healthy_threshold=2)
    tag = VersionTag("shop/web", "1.0.0", 1.0, spec.checksum(), spec, {"shop/db": "1.2.0"})
    return VersionRecord(tag, {"features": ["x"]})


def test_start_reaches_the_agent_with_everything_it_needs() -> None:
    record = InstanceRecord("web-blue-1", "shop", "web", "1.0.0", "blue", "h1", 20001,
                            Resources(cpu=0.5, memory=256 << 20), 1.0)
    pb = command_to_pb(Command("start:web-blue-1", start_command(record, version_record())))
    command = command_from_pb(pb).command
    assert isinstance(command, StartInstance)
    assert (command.instance_id, command.slot, command.port, command.image) == (
        "web-blue-1", "blue", 20001, "demo:1")
    assert command.command == ("serve", "--fast") and dict(command.env) == {"A": "1"}
    assert command.resources == Resources(cpu=0.5, memory=256 << 20)
    assert command.health == HealthCheck("/healthz", ("check", "--quick"), 3.0, 1.0, 4)
    assert (command.healthy_threshold, command.warmup_s) == (2, 2.5)
    assert (command.service_port, command.state_mode, command.idle_timeout_s) == (
        18080, "snapshot", 600.0)


def test_stop_and_route_round_trip() -> None:
    stop = command_from_pb(command_to_pb(Command("stop:x", StopInstance("x", 12.5, True))))
    assert stop == Command("stop:x", StopInstance("x", 12.5, True))
    route = SetRoute("shop", "web", 18080, "/health", (
        RouteServer("a", "1.0.0", "127.0.0.2", 20000, 128, "ready"),
        RouteServer("b", "2.0.0", "127.0.0.3", 20001, 0, "maint")))
    assert command_from_pb(command_to_pb(Command("route:1", route))).command == route


def test_latency_sketches_survive_the_wire() -> None:
    sketch = LatencySketch.of([1.0, 2.0, 5.0, 5.0, 120.0, 0.0])
    back = latency_from_pb(latency_to_pb(sketch))
    assert back == sketch and back is not None
    assert back.quantile(0.5) == sketch.quantile(0.5)
    assert latency_from_pb(types_pb2.LatencySummary()) is None


def test_registration_and_bad_resources() -> None:
    pb = agent_pb2.Register(
        host_id="h1", building="b", address="127.0.0.2",
        capacity=types_pb2.Resources(cpu_millis=4000, memory_bytes=1 << 30),
        instances=[types_pb2.InstanceStatus(
            instance_id="i1", state=types_pb2.INSTANCE_STATE_RUNNING, health_score=1.0)],
        images=["demo:1"])
    reg = registration_from_pb(pb)
    assert reg.capacity == Resources(cpu=4.0, memory=1 << 30)
    assert reg.instances[0].host_id == "h1" and reg.instances[0].routable
    with pytest.raises(InvalidArgument):
        resources_from_pb(types_pb2.Resources(memory_bytes=-1))


def test_publish_request_maps_to_the_domain_spec_and_back() -> None:
    request = admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(apartment="shop", unit="web", image="demo:1", service_port=9,
                                resources=types_pb2.Resources(cpu_millis=250)),
        version="1.2.3", changes=types_pb2.ChangeSet(fixes=["f"]))
    spec, changes, _ = publish_from_pb(request)
    assert spec.port == 0 and spec.service_port == 9
    assert spec.resources.cpu == 0.25 and changes.fixes == ("f",)
    info = version_to_pb(version_record())
    assert info.spec.port == 0 and info.spec.service_port == 18080
    assert [(r.unit, r.range, r.version) for r in info.resolved] == [
        ("shop/db", "^1.0.0", "1.2.0")]
    assert info.checksum == version_record().tag.checksum


def test_secret_values_reach_the_agent_but_never_an_answer() -> None:
    base = version_record()
    spec = dataclasses.replace(base.tag.spec, secret_env={"TOKEN": "hunter2-value"})
    tag = dataclasses.replace(base.tag, spec=spec, checksum=spec.checksum())
    record = VersionRecord(tag, base.changes)
    info = version_to_pb(record)
    assert dict(info.spec.secret_env) == {"TOKEN": REDACTED}
    assert b"hunter2-value" not in info.SerializeToString()
    instance = InstanceRecord("web-blue-1", "shop", "web", "1.0.0", "blue", "h1", 20001,
                              Resources(cpu=0.5, memory=256 << 20), 1.0)
    pb = command_to_pb(Command("start:web-blue-1", start_command(instance, record)))
    command = command_from_pb(pb).command
    assert isinstance(command, StartInstance)
    assert dict(command.secret_env) == {"TOKEN": "hunter2-value"}
    request = admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(apartment="shop", unit="web", image="demo:1",
                                secret_env={"TOKEN": "hunter2-value"}), version="1.2.3")
    assert dict(publish_from_pb(request)[0].secret_env) == {"TOKEN": "hunter2-value"}


def test_a_start_command_printed_in_a_log_shows_no_secret() -> None:
    command = StartInstance("i1", "shop", "web", "1.0.0", "blue", "demo:1", 20001,
                            secret_env={"TOKEN": "hunter2-value"})
    assert "hunter2" not in repr(Command("start:i1", command))


def test_run_as_root_travels_from_publish_to_the_agent() -> None:
    request = admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(apartment="shop", unit="web", image="demo:1", run_as_root=True),
        version="1.2.3")
    spec = publish_from_pb(request)[0]
    assert spec.run_as_root is True
    base = version_record()
    assert base.tag.spec.run_as_root is False and not version_to_pb(base).spec.run_as_root
    root_spec = dataclasses.replace(base.tag.spec, run_as_root=True)
    tag = dataclasses.replace(base.tag, spec=root_spec, checksum=root_spec.checksum())
    record = VersionRecord(tag, base.changes)
    assert version_to_pb(record).spec.run_as_root is True
    instance = InstanceRecord("web-blue-1", "shop", "web", "1.0.0", "blue", "h1", 20001,
                              Resources(cpu=0.5, memory=256 << 20), 1.0)
    for rec, expected in ((record, True), (base, False)):
        pb = command_to_pb(Command("start:web-blue-1", start_command(instance, rec)))
        command = command_from_pb(pb).command
        assert isinstance(command, StartInstance) and command.run_as_root is expected
