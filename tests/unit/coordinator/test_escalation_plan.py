"""Escalated instances: re-placed once, then their version marked failing (pure decision)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.resources import Resources
from coordinator.fleet.escalation_plan import EscalationStep, plan_escalations
from coordinator.state.records import InstanceRecord


def inst(iid: str, host: str = "h1", version: str = "1.0.0", unit: str = "web",
         after: str = "") -> InstanceRecord:
    return InstanceRecord(iid, "shop", unit, version, "blue", host, 20000, Resources(), 0.0,
                          "old" if after else "", after)


def test_an_escalated_instance_is_replaced_and_a_healthy_one_is_left_alone() -> None:
    actions = plan_escalations([inst("a"), inst("b", "h2")], {"a": "crash loop"}, set(), {})
    assert [(a.step, a.instance.instance_id) for a in actions] == [
        (EscalationStep.REPLACE, "a")]
    assert actions[0].reason == "a escalated on h1: crash loop"


def test_a_replacement_that_escalates_marks_the_version_failing_once() -> None:
    first = "a escalated on h1: crash loop"
    actions = plan_escalations(
        [inst("a0"), inst("r1", "h2", after=first), inst("r2", "h1", after=first)],
        {"a0": "crash loop", "r1": "crash loop", "r2": "crash loop"}, set(), {})
    assert [(a.step, a.instance.instance_id) for a in actions] == [
        (EscalationStep.MARK_FAILING, "r1")]
    assert "escalated again after it was re-placed" in actions[0].reason
    assert first in actions[0].reason


def test_a_failing_version_and_a_unit_in_rollout_are_left_alone() -> None:
    failing = {("shop", "web"): {"1.0.0": "crash loop"}}
    assert plan_escalations([inst("a")], {"a": "x"}, set(), failing) == []
    # another version of the same unit is still re-placed
    other = plan_escalations([inst("b", version="2.0.0")], {"b": "x"}, set(), failing)
    assert [a.step for a in other] == [EscalationStep.REPLACE]
    assert plan_escalations([inst("a")], {"a": "x"}, {("shop", "web")}, {}) == []


ids = st.text("abcdef", min_size=1, max_size=4)


@given(st.lists(st.tuples(ids, st.sampled_from(["1.0.0", "2.0.0"]), st.booleans(),
                          st.booleans()), max_size=12, unique_by=lambda t: t[0]),
       st.sets(st.sampled_from(["1.0.0", "2.0.0"])), st.booleans())
def test_never_a_second_replacement_and_one_mark_per_version(
    rows: list[tuple[str, str, bool, bool]], failing: set[str], in_rollout: bool
) -> None:
    instances = [inst(i, version=v, after="earlier" if again else "")
                 for i, v, again, _ in rows]
    escalated = {i: "crash loop" for i, _, _, esc in rows if esc}
    actions = plan_escalations(instances, escalated, {("shop", "web")} if in_rollout else set(),
                               {("shop", "web"): {v: "x" for v in failing}})
    if in_rollout:
        assert actions == []
    for action in actions:
        assert action.instance.instance_id in escalated
        assert action.instance.version not in failing
        assert (action.step is EscalationStep.MARK_FAILING) == bool(
            action.instance.after_escalation)
    marks = [a.instance.version for a in actions if a.step is EscalationStep.MARK_FAILING]
    assert len(marks) == len(set(marks))
    # a version marked in this round gets no replacement
    replaced = {a.instance.version for a in actions if a.step is EscalationStep.REPLACE}
    assert not replaced & set(marks)
