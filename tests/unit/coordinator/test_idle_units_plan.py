"""Idle collection decided by the leader (issue 17): which units are collected, and what
routes and registration do with collected instances."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from common.resources import Resources
from common.stream_messages import ObservedInstance
from coordinator.fleet.idle import UnitActivity, plan_idle
from coordinator.fleet.reconcile import plan_register
from coordinator.fleet.routes import plan_route
from coordinator.state.records import HostRecord, InstanceRecord, RouteRecord

HOSTS = {h: HostRecord(h, "b", f"127.0.0.{n}", Resources(cpu=4, memory=1 << 33))
         for n, h in enumerate(["h1", "h2"], start=2)}


def inst(iid: str, host: str = "h1", collected_at: float = 0.0) -> InstanceRecord:
    return InstanceRecord(iid, "shop", "web", "1.0.0", "blue", host, 20000, Resources(), 0.0,
                          collected_at=collected_at)


def unit(*instances: InstanceRecord, last_request: float = 0.0, since: float = 0.0,
         timeout: float = 60.0, state: str = "running", rolling: bool = False,
         observed: dict[str, str] | None = None) -> UnitActivity:
    seen = {i.instance_id: ("collected" if i.collected else "running") for i in instances}
    return UnitActivity("shop", "web", state, timeout, tuple(instances),
                        seen if observed is None else observed, last_request, since, rolling)


def test_a_unit_idle_past_its_timeout_on_every_host_is_collected_whole() -> None:
    [decision] = plan_idle([unit(inst("a"), inst("b", "h2"), last_request=100.0)], now=161.0,
                           lag=0.0)
    assert decision.instance_ids == ("a", "b")
    assert "61 s" in decision.reason and "60 s" in decision.reason


def test_a_request_on_any_host_a_start_or_a_new_leader_keeps_it() -> None:
    assert plan_idle([unit(inst("a"), last_request=150.0)], now=200.0) == []
    assert plan_idle([unit(inst("a"), since=150.0)], now=200.0) == []


def test_no_timeout_a_rollout_a_stopped_unit_or_an_unsettled_instance_is_never_collected(
) -> None:
    assert plan_idle([unit(inst("a"), timeout=0.0)], now=1e6) == []
    assert plan_idle([unit(inst("a"), rolling=True)], now=1e6) == []
    assert plan_idle([unit(inst("a"), state="deploying")], now=1e6) == []
    assert plan_idle([unit(inst("a"), observed={"a": "initializing"})], now=1e6) == []
    assert plan_idle([unit(inst("a"), observed={})], now=1e6) == []


def test_collected_instances_are_not_collected_again() -> None:
    assert plan_idle([unit(inst("a", collected_at=5.0))], now=1e6) == []
    [decision] = plan_idle([unit(inst("a", collected_at=5.0), inst("b"))], now=1e6)
    assert decision.instance_ids == ("b",)


@given(last=st.floats(0, 1e6), since=st.floats(0, 1e6), timeout=st.floats(1, 1e5),
       after=st.floats(0, 2e5))
def test_collected_exactly_when_the_quiet_time_exceeds_the_timeout(
        last: float, since: float, timeout: float, after: float) -> None:
    now = max(last, since) + after
    decisions = plan_idle([unit(inst("a"), last_request=last, since=since, timeout=timeout)],
                          now, lag=5.0)
    assert bool(decisions) == (now - max(last, since) > timeout + 5.0)


def test_collected_instances_carry_no_weight() -> None:
    instances = [inst("a", collected_at=5.0), inst("b", "h2")]
    observed = {i: ObservedInstance(i, h, "shop", "web", "1.0.0", "blue", "running", 1.0)
                for i, h in (("a", "h1"), ("b", "h2"))}
    command = plan_route(RouteRecord("shop", "web", "b", 18080, "/h", {"1.0.0": 100}),
                         instances, observed, HOSTS)
    assert {s.server: (s.weight, s.state) for s in command.servers} == {
        "a": (0, "maint"), "b": (256, "ready")}


def test_registration_never_starts_a_collected_instance_and_collects_a_running_one() -> None:
    def seen(iid: str, state: str) -> ObservedInstance:
        return ObservedInstance(iid, "h1", "shop", "web", "1.0.0", "blue", state, 1.0)

    collected = [inst("a", collected_at=5.0), inst("b", collected_at=5.0)]
    plan = plan_register("h1", [seen("b", "running")], collected)
    assert plan.start == () and plan.stop == () and plan.collect == ("b",)
    # woken while the host was away: the host's collected record is started again
    woken = [replace(collected[0], collected_at=0.0)]
    plan = plan_register("h1", [seen("a", "collected")], woken)
    assert [r.instance_id for r in plan.start] == ["a"] and plan.collect == ()
