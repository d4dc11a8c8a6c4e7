"""StreamAdapter and its pure mapping: stream commands to agent specs and data plane changes,
agent state and events to reports, request buckets to windows reported exactly once.

The data plane here is a recording fake over the real (pure) request-window model and a
FakeClock; the service runs on the recording container runtime."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.daemon import run_daemon
from agent.dataplane import (
    ServerSpec,
    ServerState,
    UnitSpec,
    WindowSnapshot,
)
from agent.instances.events import AgentEvent, EventType
from agent.instances.spec import HealthSpec, InstanceView, Slot, StateMode
from agent.service import AgentService
from agent.stream.adapter import StreamAdapter
from agent.stream.mapping import (
    instance_report,
    instance_spec,
    plane_unit,
    reported_event,
    route_changes,
    traffic_version,
    window_report,
)
from common.clock import FakeClock
from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.gc_kinds import GcKind
from common.latency import LatencySketch
from common.resources import Resources
from common.stream_commands import (
    CollectGarbage,
    SetRoute,
    SetWeights,
    StartInstance,
    StopInstance,
)
from common.stream_messages import RouteServer
from common.unit_spec import HealthCheck
from tests.support import async_eventually
from tests.unit.agent.fake_plane import FakePlane
from tests.unit.agent.fake_runtime import RecordingRuntime


def start_command(instance_id: str = "web-blue-1", port: int = 20001,
                  **changes: Any) -> StartInstance:
    command = StartInstance(
        instance_id=instance_id, apartment="shop", unit="web", version="1.2.0", slot="green",
        image="shop/web:1.2.0", port=port, command=("serve", "--fast"), env={"A": "1"},
        health=HealthCheck("/healthz", (), 2.0, 0.5, 4), healthy_threshold=2, warmup_s=3.0,
        resources=Resources(cpu=0.25, memory=64 << 20, storage=1 << 30, network=10_000_000),
        service_port=18080, state_mode="snapshot", idle_timeout_s=600.0)
    return dataclasses.replace(command, **changes)


# -- pure mapping -------------------------------------------------------------------------

def test_start_command_becomes_an_instance_spec() -> None:
    spec = instance_spec(start_command())
    assert (spec.apartment, spec.unit, spec.version, spec.instance_id) == (
        "shop", "web", "1.2.0", "web-blue-1")
    assert spec.slot is Slot.GREEN and spec.state_mode is StateMode.SNAPSHOT
    assert spec.image == "shop/web:1.2.0" and spec.port == 20001
    assert spec.command == ("serve", "--fast") and dict(spec.env) == {"A": "1"}
    h = spec.health
    assert (h.path, h.interval, h.timeout, h.success_threshold, h.failure_threshold,
            h.warmup) == ("/healthz", 2.0, 0.5, 2, 4, 3.0)
    r = spec.resources
    assert (r.cpu, r.memory, r.storage, r.network) == (0.25, 64 << 20, 1 << 30, 10_000_000)
    assert spec.idle_timeout == 600.0
    assert spec.run_as_root is False
    assert instance_spec(start_command(run_as_root=True)).run_as_root is True


def test_zero_fields_take_agent_defaults_and_bad_ones_are_refused() -> None:
    bare = start_command(health=HealthCheck(), healthy_threshold=0, warmup_s=-1.0,
                         resources=Resources(), state_mode="none", slot="blue")
    spec = instance_spec(bare)
    assert spec.health.path == HealthCheck().path and spec.health.interval > 0
    assert spec.health.warmup == 0.0
    assert spec.health.success_threshold == 1 and spec.health.failure_threshold == 3
    assert spec.resources.cpu == 0.5 and spec.resources.memory == 256 << 20
    assert spec.resources.storage == 0  # 0 is "no limit", as the coordinator meant
    with pytest.raises(InvalidArgument):
        instance_spec(start_command(slot="purple"))
    with pytest.raises(InvalidArgument):
        instance_spec(start_command(port=0))
    with pytest.raises(InvalidArgument):
        instance_spec(start_command(image=""))


def test_a_health_command_reaches_the_supervisor() -> None:
    spec = instance_spec(start_command(health=HealthCheck(command=("check", "--ready"))))
    assert spec.health.command == ("check", "--ready")


def test_the_agent_keeps_the_one_set_of_health_defaults() -> None:
    assert HealthSpec.of(HealthCheck()).to_dict() == {
        **HealthCheck().to_dict(), "success_threshold": 1, "warmup": 0.0,
        "startup_timeout": 60.0}
    old_record = {"path": "/ready", "interval": 2.0, "timeout": 0.5, "success_threshold": 2,
                  "failure_threshold": 4, "warmup": 1.0, "startup_timeout": 30.0}
    read = HealthSpec.from_dict(old_record)  # written by an agent before HealthCheck
    assert (read.path, read.interval, read.timeout, read.failure_threshold) == (
        "/ready", 2.0, 0.5, 4)
    assert HealthSpec.from_dict(read.to_dict()) == read


def test_plane_unit_names_fit_haproxy_and_stay_apart() -> None:
    assert plane_unit("shop", "web") == "shop.web"
    long_a, long_b = "a" * 40 + "x", "a" * 40 + "y"
    name_a, name_b = plane_unit(long_a, "u" * 50), plane_unit(long_b, "u" * 50)
    assert name_a != name_b and len(name_a) <= 63
    UnitSpec(name_a, 18080).validate()  # the data plane accepts it


def view(**changes: Any) -> InstanceView:
    base = InstanceView(
        instance_id="i1", apartment="shop", unit="web", version="1.0.0", slot="blue",
        state="running", health_score=1.0, address="127.0.0.3", port=20001,
        container_id="c1", generation=2, restarts=1, started_at=10.0, last_activity=20.0,
        enforcement={"cpu": "cgroup cfs quota 0.5 cores", "network":
                     "not enforced: shaping disabled on this agent",
                     "storage": "none: no limit"},
        metadata={})
    return dataclasses.replace(base, **changes)


def test_instance_report_carries_state_usage_and_unenforced_limits() -> None:
    report = instance_report(view(), "h1", "serving", {"memory_bytes": 5.0})
    assert (report.instance_id, report.host_id, report.state, report.address, report.port) == (
        "i1", "h1", "running", "127.0.0.3", 20001)
    assert report.restarts == 1 and report.reason == "serving"
    assert report.unenforced_limits == ("network",) and report.usage == {"memory_bytes": 5.0}
    escalated = instance_report(view(metadata={"escalated": "crash loop"}), "h1", "serving")
    assert escalated.reason == "crash loop"


def test_events_are_forwarded_except_plain_state_changes() -> None:
    crash = AgentEvent("instance.crashed", "i1", "web", "1.0.0", 5.0,
                       {"reason": "exited 137", "oom_killed": False, "exit_code": None})
    event = reported_event(crash, "shop")
    assert event is not None
    assert (event.type, event.apartment, event.instance_id, event.message) == (
        "instance.crashed", "shop", "i1", "exited 137")
    assert event.details == {"reason": "exited 137", "oom_killed": "false", "exit_code": ""}
    assert reported_event(dataclasses.replace(crash, type="instance.state"), "shop") is None
    assert reported_event(dataclasses.replace(crash, type="instance.health"), "shop") is None


def server(name: str, weight: int, state: str = "ready", port: int = 20001,
           version: str = "1.0.0") -> RouteServer:
    return RouteServer(name, version, "127.0.0.3", port, weight, state)


def test_route_changes_add_at_zero_then_move_weights_together_then_remove() -> None:
    current = UnitSpec("shop.web", 18080).with_server(
        ServerSpec("old", "127.0.0.3", 20001, "1.0.0", 100)).with_server(
        ServerSpec("gone", "127.0.0.4", 20002, "1.0.0", 50))
    changes = route_changes(current, [server("old", 20), server("new", 80, version="2.0.0")])
    assert changes.upserts == (ServerSpec("new", "127.0.0.3", 20001, "2.0.0", 0),)
    assert dict(changes.weights) == {"old": 20, "new": 80}
    assert changes.removals == ("gone",)
    same = route_changes(current, [server("old", 100), RouteServer(
        "gone", "1.0.0", "127.0.0.4", 20002, 50, "ready")])
    assert same.empty
    to_maint = route_changes(current, [server("old", 0, "maint")]).upserts
    assert to_maint == (ServerSpec("old", "127.0.0.3", 20001, "1.0.0", 100, ServerState.MAINT),)
    assert route_changes(None, [server("a", 0)]).upserts[0].name == "a"


def test_traffic_version_is_the_most_weighted_ready_one() -> None:
    assert traffic_version([server("a", 30), server("b", 70, version="2.0.0")]) == "2.0.0"
    assert traffic_version([server("a", 0), server("b", 90, "maint")]) is None


def test_a_completed_window_is_reported_as_it_is() -> None:
    window = WindowSnapshot("shop.web", "1.0.0", "a", "h1", 3, 1, LatencySketch.of([1, 2, 3]),
                            100.0, 103.0)
    report = window_report("h1", "shop", "web", window)
    assert (report.apartment, report.unit, report.version, report.instance_id) == (
        "shop", "web", "1.0.0", "a")
    assert (report.host_id, report.requests, report.errors, report.start, report.end) == (
        "h1", 3, 1, 100.0, 103.0)
    assert report.latency == LatencySketch.of([1, 2, 3])
    empty = WindowSnapshot("shop.web", "1.0.0", "a", "h1", 1, 1, LatencySketch(), 0.0, 1.0)
    assert window_report("h1", "shop", "web", empty).latency is None


# -- StreamAdapter over fakes ------------------------------------------------------------------

@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[tuple[StreamAdapter, FakePlane, RecordingRuntime]]:
    clock = FakeClock(start=1_700_000_000.25)
    runtime = RecordingRuntime()

    async def healthy(address: str, port: int, path: str, timeout: float) -> bool:
        return True

    config = AgentConfig(host_id="h1", advertise_address="127.0.0.2", building="demo",
                         data_dir=tmp_path, bandwidth=False, startup_probe_interval=0.01)
    service = AgentService(config, runtime, clock, prober=healthy)
    await service.open()
    plane = FakePlane(clock)
    port = StreamAdapter(service, plane, agent_version="0.1.0")
    await port.prepare()
    stop = asyncio.Event()
    running = asyncio.create_task(port.run(stop))
    yield port, plane, runtime
    stop.set()
    await running
    await service.close()


async def test_identity_names_the_host_and_its_room(
        host: tuple[StreamAdapter, FakePlane, RecordingRuntime]) -> None:
    port, _, _ = host
    me = port.identity()
    assert (me.host_id, me.building, me.address, me.agent_version) == (
        "h1", "demo", "127.0.0.2", "0.1.0")
    assert me.capacity.cpu > 0 and me.capacity.memory > 0
    assert set(me.enforceable) == {"cpu", "memory", "storage"}  # shaping is off here


async def test_routes_weights_and_drains_reach_the_data_plane(
        host: tuple[StreamAdapter, FakePlane, RecordingRuntime]) -> None:
    port, plane, _ = host
    await port.execute(SetRoute("shop", "web", 18080, "/healthz",
                                (server("a", 100), server("b", 0, "maint", port=20002))))
    assert plane.calls == [("ensure_unit", "shop.web", 18080, "/healthz"),
                           ("add_server", "a", 0, "ready"), ("add_server", "b", 0, "maint"),
                           ("set_weights", {"a": 100})]
    plane.calls.clear()
    await port.execute(SetWeights("shop", "web", {"a": 10, "b": 90}))
    assert plane.calls == [("set_weights", {"a": 10, "b": 90})]
    with pytest.raises(NotFound):
        await port.execute(SetWeights("shop", "web", {"zzz": 1}))
    await port.execute(SetRoute("shop", "web", 18080, "/healthz", (server("b", 100),)))
    # A server leaving the route is drained in the background, not cut off.
    async def drained() -> bool:
        return ("remove_server", "a") in plane.calls

    await async_eventually(drained, timeout=5)
    await port.execute(SetRoute("shop", "web", 0, "", ()))  # no entry point any more
    assert "shop.web" not in plane.spec.units


async def test_a_collected_unit_holds_requests_and_asks_for_a_wake_once_in_a_while(
        host: tuple[StreamAdapter, FakePlane, RecordingRuntime]) -> None:
    port, _, _ = host
    counted: list[tuple[bool, bool]] = []
    port.wake_counted = lambda held, sent: counted.append((held, sent))
    assert port.wake_asked("be.shop.web") is False  # no route yet: not held
    await port.execute(SetRoute("shop", "web", 18080, "/healthz", (), wake_on_request=True))
    assert port.wake_asked("be.shop.web") and port.wake_asked("pin1.shop.web")
    batch = await port.next_changes(0.1)
    assert batch.wake_units == [("shop", "web")]  # asked once for both backends
    assert port.wake_asked("be.shop.web")
    assert (await port.next_changes(0.05)).wake_units == []  # not again within 2 s
    await port.execute(SetRoute("shop", "web", 18080, "/healthz", ()))  # woken
    assert port.wake_asked("be.shop.web") is False
    assert counted == [(False, False), (True, True), (True, False), (True, False),
                       (False, False)]


@pytest.mark.parametrize("kinds", [(kind,) for kind in GcKind] + [()],
                         ids=[*GcKind, "all"])
async def test_every_gc_kind_the_coordinator_sends_runs_here(
        host: tuple[StreamAdapter, FakePlane, RecordingRuntime], kinds: tuple[GcKind, ...]) -> None:
    port, _, _ = host
    assert await port.execute(CollectGarbage(kinds)) is None
    await port.commands.close(5.0)
    batch = await port.next_changes(0.0)
    assert [e for e in batch.events if e.type == EventType.GC_FAILED] == []


async def test_start_is_idempotent_runs_in_the_background_and_stop_reports_removal(
        host: tuple[StreamAdapter, FakePlane, RecordingRuntime]) -> None:
    port, _, runtime = host
    command = start_command(state_mode="none", health=HealthCheck("/", (), 0.01, 0.1, 2),
                            healthy_threshold=1, warmup_s=0.0)
    await port.execute(command)
    await port.execute(command)  # a replayed command

    async def running() -> bool:
        batch = await port.next_changes(0.0)
        return any(r.instance_id == command.instance_id and r.state == "running"
                   for r in batch.changed)

    await async_eventually(running, timeout=5)
    await port.execute(command)  # and once it runs
    # one launch (a spare of the next generation may be created once it runs)
    assert [r.name[-3:] for r in runtime.by_call("create")] in (["-g1"], ["-g1", "-g2"])
    assert [r.state for r in port.snapshot()] == ["running"]
    await port.execute(StopInstance(command.instance_id, 1.0, drain=True))

    async def removed() -> bool:
        return command.instance_id in (await port.next_changes(0.0)).removed

    await async_eventually(removed, timeout=5)
    assert port.snapshot() == []
    await port.execute(StopInstance(command.instance_id, 1.0, drain=True))  # harmless


async def test_windows_report_every_request_exactly_once(
        host: tuple[StreamAdapter, FakePlane, RecordingRuntime]) -> None:
    port, plane, _ = host
    await port.execute(SetRoute("shop", "web", 18080, "/healthz", (server("a", 100),)))
    reported = served = 0
    for step in range(40):  # 10 s in steps of 0.25 s, requests in every step
        for _ in range(step % 3 + 1):
            plane.serve("shop.web", "a")
            served += 1
        plane.clock.advance(0.25)
        port.collect_windows()
        batch = await port.next_changes(0.0)
        for window in batch.windows:
            assert (window.apartment, window.unit, window.instance_id) == ("shop", "web", "a")
            assert window.end <= plane.clock.now() and window.start < window.end
            reported += window.requests
    still_filling = math.floor(plane.clock.now())  # this bucket is not complete yet
    in_it = sum(s.requests for s in plane.windows.snapshots(
        "shop.web", plane.clock.now(), seconds=plane.clock.now() - still_filling))
    assert reported + in_it == served and reported > 0


async def test_data_plane_commands_fail_without_a_data_plane(tmp_path: Path) -> None:
    config = AgentConfig(host_id="h1", data_dir=tmp_path, bandwidth=False)
    service = AgentService(config, RecordingRuntime())
    await service.open()
    port = StreamAdapter(service, None)
    await port.prepare()
    with pytest.raises(FailedPrecondition):
        await port.execute(SetRoute("shop", "web", 18080, "/healthz", ()))
    assert port.last_activity("nothing") is None
    await service.close()


async def test_daemon_runs_the_data_plane_and_stops_in_order(tmp_path: Path) -> None:
    """Standalone (no coordinators): the data plane starts with the agent and feeds GC;
    on stop it is closed (HAProxy keeps serving: never shut down) before supervision."""
    plane = FakePlane(FakeClock())

    @dataclass
    class OrderedRuntime(RecordingRuntime):
        async def close(self) -> None:
            plane.life.append("runtime.close")
            await super().close()

    services: list[AgentService] = []

    async def extension(service: AgentService, stopping: asyncio.Event) -> None:
        services.append(service)
        await stopping.wait()

    config = AgentConfig(host_id="h1", data_dir=tmp_path, bandwidth=False)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(config, runtime=OrderedRuntime(), stop=stop,
                                            plane=plane, extensions=[extension]))

    async def started() -> bool:
        return bool(services)

    await async_eventually(started, timeout=5)
    assert services[0].supervisor.activity_source is not None
    stop.set()
    assert await asyncio.wait_for(daemon, 10) == 0
    assert plane.life == ["plane.start", "plane.close", "runtime.close"]
