"""Instance and deploy state machines and the lifecycle record."""

from __future__ import annotations

import json
from itertools import pairwise, product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.clock import FakeClock
from common.errors import InvalidArgument, InvalidTransition
from common.lifecycle import (
    DEPLOY_TRANSITIONS,
    INSTANCE_TRANSITIONS,
    MAX_HISTORY,
    DeployState,
    InstanceState,
    LifecycleRecord,
    can_transition,
    check_transition,
)

I = InstanceState  # noqa: E741

# DESIGN.md, "Lifecycle": the table exactly as planned
PLANNED = {
    ("created", "initializing"),
    ("created", "error"),
    ("initializing", "ready"),
    ("initializing", "error"),
    ("ready", "running"),
    ("ready", "stopped"),
    ("running", "paused"),
    ("running", "stopping"),
    ("running", "error"),
    ("paused", "running"),
    ("paused", "stopping"),
    ("stopping", "stopped"),
    ("stopping", "error"),
    ("stopped", "initializing"),
    ("error", "initializing"),
    ("error", "stopped"),
}
# issue 17: idle collection scales an instance to zero; a wake starts it, a stop ends it
COLLECTION = {
    ("stopping", "collected"),
    ("collected", "initializing"),
    ("collected", "stopped"),
}
PLANNED |= COLLECTION


def test_instance_states_are_the_planned_values() -> None:
    assert [s.value for s in InstanceState] == [
        "created",
        "initializing",
        "ready",
        "running",
        "paused",
        "stopping",
        "stopped",
        "error",
        "collected",
    ]


def test_instance_table_is_exactly_the_plan() -> None:
    table = {(a.value, b.value) for a, targets in INSTANCE_TRANSITIONS.items() for b in targets}
    assert table == PLANNED
    assert set(INSTANCE_TRANSITIONS) == set(InstanceState)


@pytest.mark.parametrize(("source", "target"), list(product(InstanceState, InstanceState)))
def test_every_pair_outside_the_table_raises(source: I, target: I) -> None:
    record = LifecycleRecord(state=source, version="1.0.0", started_at=0.0, last_activity=0.0)
    if (source.value, target.value) in PLANNED:
        moved = record.transition(target, "test", now=5.0)
        assert record.state is target
        assert (moved.from_state, moved.to_state) == (source.value, target.value)
    else:
        with pytest.raises(InvalidTransition) as caught:
            record.transition(target, "test", now=5.0)
        assert source.value in str(caught.value) and target.value in str(caught.value)
        assert caught.value.context == {"from_state": source.value, "to_state": target.value}
        assert record.state is source and record.history == []


def test_deploy_table_is_closed_and_reaches_every_state() -> None:
    assert set(DEPLOY_TRANSITIONS) == set(DeployState)
    for targets in DEPLOY_TRANSITIONS.values():
        assert targets <= set(DeployState)
    reachable, frontier = {DeployState.IDLE}, [DeployState.IDLE]
    while frontier:
        for nxt in DEPLOY_TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(DeployState)


def test_deploy_table_rules() -> None:
    d = DeployState
    assert can_transition(DEPLOY_TRANSITIONS, d.RUNNING, d.DEPLOYING)
    assert can_transition(DEPLOY_TRANSITIONS, d.DEPLOYING, d.ROLLING_OUT)
    assert can_transition(DEPLOY_TRANSITIONS, d.ROLLING_OUT, d.ROLLING_BACK)
    assert can_transition(DEPLOY_TRANSITIONS, d.ROLLING_BACK, d.RUNNING)
    assert not can_transition(DEPLOY_TRANSITIONS, d.IDLE, d.ROLLING_OUT)
    # a stable version marked failing (escalated, re-placed, escalated again): an operator's
    # deploy or rollback takes the unit on
    assert can_transition(DEPLOY_TRANSITIONS, d.RUNNING, d.FAILED)
    assert can_transition(DEPLOY_TRANSITIONS, d.FAILED, d.DEPLOYING)
    assert not can_transition(DEPLOY_TRANSITIONS, d.ROLLING_OUT, d.DEPLOYING)
    with pytest.raises(InvalidTransition, match="from rolling_back to rolling_out"):
        check_transition(DEPLOY_TRANSITIONS, d.ROLLING_BACK, d.ROLLING_OUT)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list(InstanceState)), max_size=30))
def test_random_walks_follow_the_table_and_record_history(targets: list[I]) -> None:
    clock = FakeClock()
    record = LifecycleRecord.new("1.2.3", clock)
    for target in targets:
        clock.advance(1)
        allowed = target in INSTANCE_TRANSITIONS[record.state]
        before = record.state
        if allowed:
            record.transition(target, f"to {target}", clock.now())
        else:
            with pytest.raises(InvalidTransition):
                record.transition(target, "bad", clock.now())
            assert record.state is before
    states = [InstanceState.CREATED.value] + [t.to_state for t in record.history]
    for step, (a, b) in enumerate(pairwise(states)):
        assert record.history[step].from_state == a
        assert InstanceState(b) in INSTANCE_TRANSITIONS[InstanceState(a)]
    assert [t.at for t in record.history] == sorted(t.at for t in record.history)


def test_new_record_uses_the_injected_clock() -> None:
    clock = FakeClock(start=1000.0)
    record = LifecycleRecord.new("2.0.0", clock, {"host": "127.0.0.2"})
    assert (record.state, record.started_at, record.last_activity) == (I.CREATED, 1000.0, 1000.0)
    assert record.health_score == 1.0 and record.metadata == {"host": "127.0.0.2"}
    clock.advance(3)
    moved = record.transition(I.INITIALIZING, "container started", clock.now())
    assert moved.at == 1003.0 and moved.reason == "container started"
    assert record.last_activity == 1003.0
    record.touch(1010.0)
    assert record.idle_for(1015.0) == 5.0
    record.touch(1001.0)  # a late, older activity never moves last_activity back
    assert record.last_activity == 1010.0


def test_health_score_is_bounded() -> None:
    record = LifecycleRecord.new("1.0.0", FakeClock())
    record.set_health(0.25, 1_700_000_001.0)
    assert record.health_score == 0.25
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InvalidArgument, match="health_score"):
            record.set_health(bad, 0.0)


def test_history_is_capped() -> None:
    record = LifecycleRecord.new("1.0.0", FakeClock())
    record.transition(I.INITIALIZING, "start", 1.0)
    for i in range(MAX_HISTORY):
        record.transition(I.ERROR, "boom", 2.0 + i)
        record.transition(I.INITIALIZING, "retry", 2.5 + i)
    assert len(record.history) == MAX_HISTORY
    assert record.history[-1].to_state == "initializing"


def test_record_round_trips_through_json() -> None:
    clock = FakeClock()
    record = LifecycleRecord.new("1.0.0", clock, {"slot": "green"})
    record.transition(I.INITIALIZING, "start", clock.now() + 1)
    record.set_health(0.5, clock.now() + 2)
    again = LifecycleRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"state": "sleeping"}, "state"),
        ({"version": 3}, "version"),
        ({"started_at": "soon"}, "started_at"),
        ({"metadata": {"a": 1}}, "metadata"),
        ({"history": [{"at": 1.0, "from": "created"}]}, "to"),
        ({"health_score": 7}, "health_score"),
    ],
)
def test_bad_records_are_refused_by_field(patch: dict[str, object], field: str) -> None:
    data = LifecycleRecord.new("1.0.0", FakeClock()).to_dict() | patch
    with pytest.raises(InvalidArgument, match=field):
        LifecycleRecord.from_dict(data)
