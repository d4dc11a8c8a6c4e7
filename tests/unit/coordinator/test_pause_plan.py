"""Which instances a pause or resume changes, and what it refuses (pure)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import FailedPrecondition, NotFound
from common.resources import Resources
from coordinator.rollouts.pausing import plan_pause, refuse_paused
from coordinator.state.records import InstanceRecord

NAME = "shop/web"


def inst(iid: str, paused: bool = False) -> InstanceRecord:
    return InstanceRecord(iid, "shop", "web", "1.0.0", "blue", "h1", 20000, Resources(), 0.0,
                          paused=paused)


RUNNING = {"a": "running", "b": "running", "c": "running"}


def test_a_whole_unit_pause_changes_every_instance_and_says_so() -> None:
    plan = plan_pause(NAME, [inst("a"), inst("b")], (), True, RUNNING)
    assert (plan.change, plan.paused_after, plan.whole) == (("a", "b"), ("a", "b"), True)


def test_pausing_some_instances_leaves_the_others_serving() -> None:
    plan = plan_pause(NAME, [inst("a"), inst("b"), inst("c")], ["b"], True, RUNNING)
    assert (plan.change, plan.paused_after, plan.whole) == (("b",), ("b",), False)


def test_pause_and_resume_of_what_already_is_so_change_nothing() -> None:
    instances = [inst("a", paused=True), inst("b")]
    observed = {"a": "paused", "b": "running"}
    assert plan_pause(NAME, instances, ["a"], True, observed).change == ()
    assert plan_pause(NAME, instances, ["b"], False, observed).change == ()
    resumed = plan_pause(NAME, instances, (), False, observed)
    assert (resumed.change, resumed.paused_after, resumed.whole) == (("a",), (), False)


def test_refusals_name_what_is_wrong() -> None:
    with pytest.raises(NotFound, match="shop/web has no instance x, y"):
        plan_pause(NAME, [inst("a")], ["y", "x"], True, RUNNING)
    with pytest.raises(FailedPrecondition, match="has no instance to pause"):
        plan_pause(NAME, [], (), True, {})
    with pytest.raises(FailedPrecondition, match=r"only running instances can be paused: "
                       r"b \(initializing\), c \(not reported by its host\)"):
        plan_pause(NAME, [inst("a"), inst("b"), inst("c")], (), True,
                   {"a": "running", "b": "initializing"})
    # resuming does not need the host's word: the mark is what a registering host follows
    assert plan_pause(NAME, [inst("a", paused=True)], (), False, {}).change == ("a",)


def test_deploy_scale_and_rollback_are_refused_while_instances_are_paused() -> None:
    refuse_paused(NAME, [inst("a")], "deployed")
    with pytest.raises(FailedPrecondition, match=r"shop/web cannot be deployed while "
                       r"instances are paused \(a\); resume them first with "
                       r"`landlord units resume shop/web`"):
        refuse_paused(NAME, [inst("a", paused=True), inst("b")], "deployed")


IDS = st.lists(st.sampled_from("abcdef"), min_size=1, max_size=6, unique=True)


@given(IDS, st.sets(st.sampled_from("abcdef")), st.lists(st.sampled_from("abcdef")),
       st.booleans())
def test_the_marks_after_a_plan_are_the_asked_ones_flipped(
        ids: list[str], paused: set[str], asked: list[str], pause: bool) -> None:
    instances = [dataclasses.replace(inst(i), paused=i in paused) for i in ids]
    asked = [a for a in asked if a in ids]
    observed = {i: "paused" if i in paused else "running" for i in ids}
    plan = plan_pause(NAME, instances, asked, pause, observed)
    chosen = set(asked) or set(ids)
    before = paused & set(ids)
    after = (before | chosen) if pause else (before - chosen)
    assert set(plan.paused_after) == after
    assert set(plan.change) == (chosen - before if pause else chosen & before)
    assert plan.whole == (after == set(ids))
