"""Admission: a unit's first deploy is an engine rollout with no stable version; building
choice, replica bound and dependency checks happen before any record is written."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common.errors import FailedPrecondition, InsufficientResources, InvalidArgument
from common.resources import Resources
from common.unit_spec import UnitSpec
from common.versions import VersionTag
from coordinator.fleet.placement import HostRoom
from coordinator.rollouts.actions import SetSplit
from coordinator.rollouts.admission import DeployFacts, admit, choose_building
from coordinator.rollouts.engine import actions_for
from coordinator.rollouts.record import Phase
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.state.records import InstanceRecord, RouteRecord, UnitRecord, VersionRecord

NOW = 1_700_000_000.0


def _version(version: str, *dependencies: str) -> VersionRecord:
    spec = UnitSpec(apartment="shop", unit="web", version=version, image="demo:1", port=8080,
                    service_port=9000, resources=Resources(memory=64 << 20),
                    dependencies=dependencies)
    return VersionRecord(VersionTag("shop/web", version, NOW, spec.checksum(), spec))


def _facts(unit: UnitRecord, *instances: InstanceRecord,
           running: dict[str, frozenset[str]] | None = None) -> DeployFacts:
    versions = {"1.0.0": _version("1.0.0"), "1.1.0": _version("1.1.0", "db@^2.0.0")}
    rooms = [HostRoom(f"h{i}", Resources(cpu=4, memory=1 << 30)) for i in range(2)]
    return DeployFacts(unit=unit, versions=versions, instances=instances, active=None,
                       running=running or {}, rooms=rooms)


def test_a_first_deploy_is_an_initial_rollout_in_blue() -> None:
    facts = _facts(UnitRecord("shop", "web"))
    asked = RolloutSettings(strategy=Strategy.BLUE_GREEN, replicas=2)
    record = admit("r1", "shop", "web", "1.0.0", "b1", asked, facts, NOW)
    assert (record.phase, record.from_version, record.to_version) == (Phase.PENDING, "", "1.0.0")
    assert record.settings.strategy is Strategy.INITIAL and not record.has_stable
    assert record.new_slot == "blue" and record.settings.replicas == 2
    assert record.split() == {"1.0.0": 100.0}
    assert record.settings.step_plan().steps == (100,)


def test_a_rollout_of_a_running_unit_goes_to_the_other_slot() -> None:
    old = InstanceRecord("i1", "shop", "web", "1.0.0", "blue", "h0", 20000, Resources(), NOW)
    facts = _facts(UnitRecord("shop", "web", "running", "1.0.0"), old,
                   running={"shop/db": frozenset({"2.1.0"})})
    record = admit("r2", "shop", "web", "1.1.0", "b1", RolloutSettings(), facts, NOW)
    assert record.new_slot == "green" and record.old_instances == ("i1",)
    assert record.settings.strategy is Strategy.CANARY and record.has_stable


def test_refusals_name_what_is_wrong() -> None:
    first = _facts(UnitRecord("shop", "web"))
    with pytest.raises(FailedPrecondition, match=r"shop/db@\^2\.0\.0 .*is not running"):
        admit("r", "shop", "web", "1.1.0", "b1", RolloutSettings(), first, NOW)
    with pytest.raises(FailedPrecondition, match=r"9\.9\.9 is not published"):
        admit("r", "shop", "web", "9.9.9", "b1", RolloutSettings(), first, NOW)
    roomy = _facts(UnitRecord("shop", "web"))
    with pytest.raises(InsufficientResources):  # 40 x 64Mi > 2 hosts x 1Gi
        admit("r", "shop", "web", "1.0.0", "b1", RolloutSettings(replicas=40), roomy, NOW)


def test_the_first_deploy_starts_its_instances_then_routes_all_traffic_to_them() -> None:
    record = admit("r1", "shop", "web", "1.0.0", "b1", RolloutSettings(replicas=2),
                   _facts(UnitRecord("shop", "web")), NOW)
    deploying = actions_for(replace(record, phase=Phase.DEPLOYING))
    assert [type(a).__name__ for a in deploying] == ["SetUnitState", "StartInstances"]
    switching = actions_for(replace(record, phase=Phase.SWITCHING, new_percent=100.0))
    split = next(a for a in switching if isinstance(a, SetSplit))
    assert split.split == {"1.0.0": 100.0}
    sticky = replace(record, phase=Phase.SWITCHING, new_percent=100.0,
                     settings=replace(record.settings, sticky=True))
    assert not next(a for a in actions_for(sticky) if isinstance(a, SetSplit)).sticky


def test_a_sticky_rollout_is_sticky_only_while_its_steps_run() -> None:
    record = admit("r1", "shop", "web", "1.1.0", "b1", RolloutSettings(sticky=True),
                   _facts(UnitRecord("shop", "web", stable_version="1.0.0"),
                          running={"shop/db": frozenset({"2.0.0"})}), NOW)

    def split_of(phase: Phase, percent: float = 100.0) -> SetSplit:
        found = actions_for(replace(record, phase=phase, new_percent=percent,
                                    traffic_moved=True))
        return next(a for a in found if isinstance(a, SetSplit))

    assert split_of(Phase.SWITCHING, 25.0).sticky
    assert split_of(Phase.SWITCHING, 100.0).sticky  # stable's clients stay at 100 % too
    assert not split_of(Phase.COMPLETING).sticky  # promoted: every client moves
    assert not split_of(Phase.ROLLING_BACK).sticky  # rolled back: cookies follow weights
    plain = replace(record, settings=replace(record.settings, sticky=False))
    switching = actions_for(replace(plain, phase=Phase.SWITCHING, new_percent=25.0))
    assert not next(a for a in switching if isinstance(a, SetSplit)).sticky


def test_building_is_the_named_one_else_the_units_else_the_only_one() -> None:
    unit = UnitRecord("shop", "web")
    assert choose_building("b2", unit, ["b1"]) == "b2"
    assert choose_building("", UnitRecord("shop", "web", building="b3"), ["b1", "b2"]) == "b3"
    assert choose_building("", unit, ["b1", "b1"]) == "b1"
    with pytest.raises(InvalidArgument, match="building is required: hosts are in b1, b2"):
        choose_building("", unit, ["b2", "b1"])
    with pytest.raises(InvalidArgument, match="no building yet"):
        choose_building("", unit, [])


def test_another_apartments_entry_point_is_refused_without_naming_it() -> None:
    def route(apartment: str, unit: str, building: str, port: int) -> RouteRecord:
        return RouteRecord(apartment, unit, building, port, "/healthz", {"1.0.0": 100.0})

    facts = replace(_facts(UnitRecord("shop", "web")),
                    routes=[route("blog", "db", "b1", 9000)])
    with pytest.raises(FailedPrecondition) as refused:
        admit("r", "shop", "web", "1.0.0", "b1", RolloutSettings(), facts, NOW)
    assert str(refused.value) == (
        "shop/web 1.0.0 serves on service port 9000, the entry point of a unit of another "
        "apartment in building b1; publish a version with another service port")
    assert "db" not in str(refused.value)
    # the same port in another building, or of the apartment's own units: admitted
    for routes in ([route("blog", "db", "b2", 9000)], [route("shop", "api", "b1", 9000)],
                   [route("blog", "db", "b1", 9001)]):
        admit("r", "shop", "web", "1.0.0", "b1", RolloutSettings(), replace(facts, routes=routes),
              NOW)
