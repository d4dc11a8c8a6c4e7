"""The pure decisions behind `landlord units stop/delete/scale`."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import FailedPrecondition, InvalidArgument, InvalidTransition
from common.lifecycle import DEPLOY_TRANSITIONS, DeployState
from common.resources import Resources
from common.unit_spec import UnitSpec
from common.versions import VersionTag
from coordinator.rollouts.unit_changes import (
    InstanceFacts,
    check_scale_count,
    choose_removals,
    deletable,
    dependants,
    refuse_dependants,
    scaled,
    stopped,
)
from coordinator.state.records import UnitRecord, VersionRecord

RUNNING = UnitRecord("shop", "db", state="running", stable_version="1.0.0",
                     building="demo", replicas=2)


def version(apartment: str, unit: str, number: str, *deps: str) -> VersionRecord:
    spec = UnitSpec(apartment=apartment, unit=unit, version=number, image="demo:1", port=0,
                    resources=Resources(cpu=0.1), dependencies=tuple(deps))
    return VersionRecord(VersionTag(f"{apartment}/{unit}", number, 1.0, spec.checksum(), spec))


def test_scale_count_bounds_with_messages() -> None:
    assert check_scale_count(3) == 3
    with pytest.raises(InvalidArgument, match="units stop"):
        check_scale_count(0)
    with pytest.raises(InvalidArgument, match="from 1 to 1000, got 1001"):
        check_scale_count(1001)
    with pytest.raises(InvalidArgument, match="from 1 to 1000"):
        check_scale_count(-2)


def test_stop_clears_the_stable_version_and_is_idempotent() -> None:
    after = stopped(RUNNING, True, 5.0)
    assert after is not None
    assert (after.state, after.stable_version, after.replicas, after.updated_at) == (
        "stopped", "", 0, 5.0)
    assert after.latest_version == RUNNING.latest_version and after.building == "demo"
    assert stopped(after, False, 6.0) is None
    assert stopped(UnitRecord("shop", "db"), False, 6.0) is None  # never deployed
    # a stop interrupted before its instances were stopped is finished by stopping again
    assert stopped(after, True, 7.0) is not None
    with pytest.raises(InvalidTransition):
        stopped(RUNNING.__class__("shop", "db", state="rolling_out"), True, 1.0)


def test_a_stopped_unit_deploys_again() -> None:
    assert DeployState.DEPLOYING in DEPLOY_TRANSITIONS[DeployState.STOPPED]


def test_only_a_stopped_unit_without_instances_is_deletable() -> None:
    deletable(UnitRecord("shop", "db", state="stopped"), 0)
    deletable(UnitRecord("shop", "db"), 0)  # published, never deployed
    with pytest.raises(FailedPrecondition, match="stop it first with `landlord units stop "
                       "shop/db`"):
        deletable(RUNNING, 2)
    with pytest.raises(FailedPrecondition, match="1 instance"):
        deletable(UnitRecord("shop", "db", state="stopped"), 1)


def test_dependants_are_the_other_units_whose_running_versions_need_it() -> None:
    versions = {
        ("shop", "web"): {"1.0.0": version("shop", "web", "1.0.0", "db@^1"),
                          "2.0.0": version("shop", "web", "2.0.0")},
        ("blog", "feed"): {"1.0.0": version("blog", "feed", "1.0.0", "shop/db@*")},
        ("shop", "cron"): {"1.0.0": version("shop", "cron", "1.0.0", "db@^1")},
        ("shop", "db"): {"1.0.0": version("shop", "db", "1.0.0")},
    }
    running = {("shop", "web"): {"1.0.0"}, ("blog", "feed"): {"1.0.0"},
               ("shop", "db"): {"1.0.0"}}  # cron is published, not running
    assert dependants("shop", "db", running, versions) == ["blog/feed", "shop/web"]
    assert dependants("shop", "db", {("shop", "web"): {"2.0.0"}}, versions) == []
    with pytest.raises(FailedPrecondition, match="depend on it: shop/web, 1 unit"):
        refuse_dependants("shop", "db", ["blog/feed", "shop/web"], lambda a: a == "shop")
    with pytest.raises(FailedPrecondition, match="depend on it: blog/feed, shop/web;"):
        refuse_dependants("shop", "db", ["blog/feed", "shop/web"], lambda a: True)
    refuse_dependants("shop", "db", [], lambda a: True)


def test_scale_needs_a_running_stable_version() -> None:
    assert scaled(RUNNING, 5, 3.0).replicas == 5
    for unit in (UnitRecord("shop", "db"), UnitRecord("shop", "db", state="stopped"),
                 UnitRecord("shop", "db", state="failed", stable_version="1.0.0")):
        with pytest.raises(FailedPrecondition, match="only a unit running a stable version"):
            scaled(unit, 2, 0.0)


def test_removals_take_unhealthy_instances_first() -> None:
    found = [InstanceFacts("a", "h1", True, 1.0), InstanceFacts("b", "h1", False, 2.0),
             InstanceFacts("c", "h2", True, 3.0)]
    assert choose_removals(found, 2) == ["b"]
    assert choose_removals(found, 3) == []
    assert sorted(choose_removals(found, 0)) == ["a", "b", "c"]


facts = st.lists(
    st.builds(InstanceFacts, instance_id=st.uuids().map(str),
              host_id=st.sampled_from(["h1", "h2", "h3", "h4"]), healthy=st.booleans(),
              created_at=st.floats(0, 100)),
    max_size=20, unique_by=lambda f: f.instance_id)


@given(facts, st.integers(0, 25))
def test_removals_keep_the_healthy_ones_spread(instances: list[InstanceFacts], keep: int) -> None:
    chosen = choose_removals(instances, keep)
    assert len(chosen) == max(0, len(instances) - keep) == len(set(chosen))
    left = [i for i in instances if i.instance_id not in chosen]
    # no healthy instance goes while an unhealthy one stays
    if any(not i.healthy for i in left):
        assert all(not i.healthy for i in instances if i.instance_id in chosen)
    # the healthy ones left are as evenly spread as they can be: their busiest host runs
    # the fewest instances any choice of the same count could leave on the busiest host
    before = Counter(i.host_id for i in instances if i.healthy)
    after = Counter(i.host_id for i in left if i.healthy)
    kept = sum(after.values())
    if kept:
        best = min(m for m in range(kept + 1)
                   if sum(min(n, m) for n in before.values()) >= kept)
        assert max(after.values()) == best
