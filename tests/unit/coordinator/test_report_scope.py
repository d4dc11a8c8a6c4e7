"""The filter that keeps an agent's report to the instances placed on its own host, and to
the traffic its own HAProxy took."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.resources import Resources
from common.stream_messages import (
    AgentReport,
    MetricsWindow,
    ObservedInstance,
    ReportedEvent,
    UsageReading,
)
from coordinator.fleet.report_scope import DropKind, own_observations, scope_report
from coordinator.state.records import InstanceRecord

PLACED = {
    "a1": InstanceRecord("a1", "shop", "web", "2.0", "green", "host-a", 20000, Resources(), 0.0),
    "b1": InstanceRecord("b1", "shop", "web", "1.0", "blue", "host-b", 20001, Resources(), 0.0),
    "b2": InstanceRecord("b2", "shop", "api", "1.0", "blue", "host-b", 20002, Resources(), 0.0),
    "c1": InstanceRecord("c1", "shop", "db", "1.0", "blue", "host-c", 20003, Resources(), 0.0),
}
ROUTED_BY_B = {("shop", "web"), ("shop", "api")}
"""shop/db's route goes to another building (host-c's), not to host-b."""


def placed(iid: str) -> InstanceRecord | None:
    return PLACED.get(iid)


def units_b() -> frozenset[tuple[str, str]]:
    return frozenset(r.unit_key for r in PLACED.values() if r.host_id == "host-b")


def seen(iid: str, host: str = "host-b", state: str = "running") -> ObservedInstance:
    return ObservedInstance(iid, host, "shop", "web", "1.0", "blue", state, 1.0)


def routes_b(apartment: str, unit: str) -> bool:
    return (apartment, unit) in ROUTED_BY_B


def window(iid: str, unit: str = "web", version: str = "1.0", errors: int = 0,
           host: str = "host-b") -> MetricsWindow:
    return MetricsWindow("shop", unit, version, iid, host, 0.0, 10.0, 100, errors)


def scope(report: AgentReport, observed: set[str] | None = None):  # type: ignore[no-untyped-def]
    return scope_report(report, "host-b", placed, observed or set(), units_b, routes_b)


def test_a_status_for_another_hosts_instance_is_dropped() -> None:
    out = scope(AgentReport(1, 0.0, changed=(seen("a1", state="error"), seen("b1"))))
    assert [o.instance_id for o in out.report.changed] == ["b1"]
    assert out.dropped == {DropKind.STATUS: 1}
    assert out.examples[DropKind.STATUS] == "a1"


def test_usage_only_of_own_instances_already_observed_here() -> None:
    readings = tuple(UsageReading(iid, {"cpu_cores": 1.0}, 0.0) for iid in ("a1", "b1", "b2",
                                                                            "gone", "new"))
    out = scope(AgentReport(1, 0.0, usage=readings), observed={"a1", "b1", "gone"})
    assert [r.instance_id for r in out.report.usage] == ["b1", "gone"]
    assert out.dropped == {DropKind.STATUS: 3}  # a1: placed on host-a; b2, new: not seen here


def test_an_instance_placed_nowhere_is_still_observed() -> None:
    kept, dropped = own_observations([seen("gone")], "host-b", placed)
    assert [o.instance_id for o in kept] == ["gone"] and dropped == []


def test_removals_only_of_own_or_observed_instances() -> None:
    out = scope(AgentReport(1, 0.0, removed_instance_ids=("a1", "b1", "old", "nobody")),
                observed={"old"})
    assert out.report.removed_instance_ids == ("b1", "old")
    assert out.dropped == {DropKind.REMOVAL: 2}


def test_events_about_others_are_dropped_host_events_kept() -> None:
    events = (
        ReportedEvent("instance.crashed", 1.0, instance_id="a1"),  # host-a's
        ReportedEvent("instance.crashed", 1.0, instance_id="b1", unit="api"),  # wrong unit
        ReportedEvent("limit_exceeded", 1.0, apartment="shop", unit="db"),  # no unit here
        ReportedEvent("rollout.promoted", 1.0, apartment="shop", unit="web"),  # not an agent's
        ReportedEvent("audit", 1.0),  # the coordinator's alone
        ReportedEvent("host.forgotten", 1.0),  # the coordinator's alone
        ReportedEvent("instance.crashed", 1.0, instance_id="b1", apartment="shop", unit="web"),
        ReportedEvent("limit_exceeded", 1.0, apartment="shop", unit="api"),
        ReportedEvent("gc.collected", 1.0),
        ReportedEvent("instance.removed", 1.0, instance_id="stopping"),
        ReportedEvent("instance.removed", 1.0, instance_id="invented"),
    )
    out = scope(AgentReport(1, 0.0, events=events), observed={"stopping"})
    assert [e.type for e in out.report.events] == [
        "instance.crashed", "limit_exceeded", "gc.collected", "instance.removed"]
    assert out.dropped == {DropKind.EVENT: 7}


def test_an_event_about_an_instance_first_reported_in_the_same_report_is_kept() -> None:
    out = scope(AgentReport(1, 0.0, changed=(seen("new"),),
                            events=(ReportedEvent("instance.state", 1.0, instance_id="new"),)))
    assert len(out.report.events) == 1 and not out.dropped


def test_windows_for_any_instance_of_a_routed_unit_with_its_unit_and_version() -> None:
    # host-b's HAProxy routes to every instance of shop/web and shop/api, host-a's among them
    windows = (window("a1", version="2.0", errors=3),  # host-a's canary, entered on host-b
               window("b1"), window("b2", unit="api"))
    out = scope(AgentReport(1, 0.0, windows=windows))
    assert out.report.windows == windows and not out.dropped


def test_forged_windows_are_dropped() -> None:
    windows = (window("a1", version="1.0"),   # host-a's canary, claimed as the stable
               window("b1", version="2.0"),   # own instance, another version
               window("b1", unit="api"),      # own instance, another unit
               window("a1", unit="api", version="2.0"),  # another unit's instance
               window("invented"),            # no such instance
               window("c1", unit="db"),       # a unit whose route host-b does not get
               window("a1", version="2.0", host="host-a"),  # claims another entry host
               window("b1"))
    out = scope(AgentReport(1, 0.0, windows=windows))
    assert [(w.instance_id, w.version) for w in out.report.windows] == [("b1", "1.0")]
    assert out.dropped == {DropKind.WINDOW: 7}
    assert out.examples[DropKind.WINDOW] == "a1"


def test_a_clean_report_is_returned_as_is() -> None:
    report = AgentReport(1, 0.0, changed=(seen("b1"),), windows=(window("b1"),))
    out = scope(report)
    assert out.report is report and out.dropped == {}


IDS = st.sampled_from(["a1", "b1", "b2", "c1", "x"])


@given(changed=st.lists(IDS), removed=st.lists(IDS), events=st.lists(IDS),
       windows=st.lists(st.tuples(IDS, st.sampled_from(["host-a", "host-b"]))),
       observed=st.sets(IDS))
def test_nothing_about_another_hosts_instance_survives_but_its_traffic_here(
        changed: list[str], removed: list[str], events: list[str],
        windows: list[tuple[str, str]], observed: set[str]) -> None:
    def honest(iid: str, host: str) -> MetricsWindow:
        found = PLACED.get(iid)
        if found is None:
            return window(iid, host=host)
        return window(iid, unit=found.unit, version=found.version, host=host)

    report = AgentReport(
        1, 0.0, changed=tuple(seen(i) for i in changed), removed_instance_ids=tuple(removed),
        events=tuple(ReportedEvent("instance.state", 1.0, instance_id=i) for i in events),
        windows=tuple(honest(i, host) for i, host in windows))
    out = scope(report, observed)
    kept = out.report
    mentioned = ([o.instance_id for o in kept.changed] + list(kept.removed_instance_ids)
                 + [e.instance_id for e in kept.events])
    assert "a1" not in mentioned
    # windows: every placed instance of a routed unit, attributed to host-b only
    assert [(w.instance_id, w.host_id) for w in kept.windows] == [
        (i, host) for i, host in windows if i in ("a1", "b1", "b2") and host == "host-b"]
    total = len(changed) + len(removed) + len(events) + len(windows)
    assert len(mentioned) + len(kept.windows) + sum(out.dropped.values()) == total
