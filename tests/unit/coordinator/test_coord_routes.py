"""The data plane of a unit: weights for routable instances only, never traffic to nothing."""

from __future__ import annotations

import dataclasses

from common.resources import Resources
from common.stream_messages import ObservedInstance
from coordinator.fleet.reconcile import plan_register
from coordinator.fleet.routes import plan_route
from coordinator.state.records import HostRecord, InstanceRecord, RouteRecord

HOSTS = {
    h: HostRecord(h, "b", f"127.0.0.{n}", Resources(cpu=4, memory=1 << 33))
    for n, h in enumerate(["h1", "h2", "h3"], start=2)
}


def inst(iid: str, host: str, version: str = "1.0.0") -> InstanceRecord:
    return InstanceRecord(iid, "shop", "web", version, "blue", host, 20000, Resources(), 0.0)


def seen(
    iid: str, host: str, state: str = "running", health: float = 1.0, version: str = "1.0.0"
) -> ObservedInstance:
    return ObservedInstance(iid, host, "shop", "web", version, "blue", state, health)


def route(split: dict[str, float]) -> RouteRecord:
    return RouteRecord("shop", "web", "b", 18080, "/health", split)


def test_every_running_instance_shares_the_traffic() -> None:
    instances = [inst("a", "h1"), inst("b", "h2")]
    command = plan_route(
        route({"1.0.0": 100}), instances, {"a": seen("a", "h1"), "b": seen("b", "h2")}, HOSTS
    )
    assert {s.server: (s.weight, s.state, s.address) for s in command.servers} == {
        "a": (256, "ready", "127.0.0.2"),
        "b": (256, "ready", "127.0.0.3"),
    }
    assert command.service_port == 18080


def test_unready_unhealthy_and_lost_instances_get_no_traffic() -> None:
    instances = [inst("a", "h1"), inst("b", "h2"), inst("c", "h3"), inst("d", "h1")]
    observed = {
        "a": seen("a", "h1"),
        "b": seen("b", "h2", "initializing"),
        "c": seen("c", "h3"),
        "d": seen("d", "h1", health=0.0),
    }
    command = plan_route(route({"1.0.0": 100}), instances, observed, HOSTS, lost_hosts={"h3"})
    weights = {s.server: (s.weight, s.state) for s in command.servers}
    assert weights == {"a": (256, "ready"), "b": (0, "maint"), "c": (0, "maint"), "d": (0, "maint")}


def test_a_version_without_routable_instances_gives_its_share_to_the_others() -> None:
    instances = [inst("a", "h1", "1.0.0"), inst("b", "h2", "2.0.0")]
    observed = {"a": seen("a", "h1"), "b": seen("b", "h2", "initializing", version="2.0.0")}
    command = plan_route(route({"1.0.0": 75, "2.0.0": 25}), instances, observed, HOSTS)
    assert {s.server: s.weight for s in command.servers} == {"a": 256, "b": 0}


def test_a_canary_split_is_kept_between_versions() -> None:
    instances = [inst("a", "h1", "1.0.0"), inst("b", "h2", "1.0.0"), inst("c", "h3", "2.0.0")]
    observed = {i.instance_id: seen(i.instance_id, i.host_id, version=i.version) for i in instances}
    command = plan_route(route({"1.0.0": 75, "2.0.0": 25}), instances, observed, HOSTS)
    weights = {s.server: s.weight for s in command.servers}
    total = sum(weights.values())
    assert abs(weights["c"] / total - 0.25) < 0.01


def test_a_sticky_route_reaches_every_host_as_sticky() -> None:
    instances = [inst("a", "h1")]
    observed = {"a": seen("a", "h1")}
    assert not plan_route(route({"1.0.0": 100}), instances, observed, HOSTS).sticky
    sticky = RouteRecord("shop", "web", "b", 18080, "/health", {"1.0.0": 100}, sticky=True)
    assert plan_route(sticky, instances, observed, HOSTS).sticky


def test_no_routable_instance_means_all_weights_zero() -> None:
    command = plan_route(route({"1.0.0": 100}), [inst("a", "h1")], {}, HOSTS)
    assert [(s.weight, s.state) for s in command.servers] == [(0, "maint")]


def test_register_stops_duplicates_and_restarts_missing_instances() -> None:
    desired = [inst("keep", "h1"), inst("missing", "h1"), inst("elsewhere", "h2")]
    reported = [seen("keep", "h1"), seen("dup", "h1"), seen("old", "h1", "stopped")]
    plan = plan_register("h1", reported, desired)
    assert plan.stop == ("dup",)
    assert [r.instance_id for r in plan.start] == ["missing"]


def test_paused_instances_get_no_traffic_and_a_wholly_paused_unit_says_retry_after() -> None:
    paused = dataclasses.replace(inst("a", "h1"), paused=True)
    observed = {"a": seen("a", "h1"), "b": seen("b", "h2")}
    some = plan_route(route({"1.0.0": 100}), [paused, inst("b", "h2")], observed, HOSTS,
                      retry_after_s=10)
    assert {s.server: (s.weight, s.state) for s in some.servers} == {
        "a": (0, "maint"), "b": (256, "ready")}
    assert some.retry_after_s == 0  # the others serve: no 503 to explain
    both = [paused, dataclasses.replace(inst("b", "h2"), paused=True)]
    whole = plan_route(route({"1.0.0": 100}), both, observed, HOSTS, retry_after_s=10)
    assert [s.weight for s in whole.servers] == [0, 0] and whole.retry_after_s == 10
    assert plan_route(route({"1.0.0": 100}), [], {}, HOSTS, retry_after_s=10).retry_after_s == 0


def test_a_registering_host_is_told_to_pause_and_resume_what_differs_from_the_marks() -> None:
    desired = [dataclasses.replace(inst("a", "h1"), paused=True), inst("b", "h1"),
               dataclasses.replace(inst("c", "h1"), paused=True), inst("d", "h1")]
    reported = [seen("a", "h1"), seen("b", "h1", "paused"), seen("c", "h1", "paused"),
                seen("d", "h1")]
    plan = plan_register("h1", reported, desired)
    assert (plan.pause, plan.resume, plan.stop, plan.start) == (("a",), ("b",), (), ())
