"""One active rollout per unit: the key's claim, release and take-over reconciliation
(pure), and a runner that meets an invalid transition stops once and says why."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollout_sim import World, make_record

from common.errors import FailedPrecondition
from common.lifecycle import DeployState
from coordinator.rollouts.one_active import claim, reconcile, release
from coordinator.rollouts.record import Phase, RolloutRecord, decode_record
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.state.cluster_state import Versioned
from coordinator.state.keys import KeyLayout
from coordinator.state.records import ActiveRolloutRecord

LAYOUT = KeyLayout("/t")
KEY = LAYOUT.active_rollout("acme", "shop")


def rollout(rollout_id: str, phase: Phase = Phase.SWITCHING, at: float = 100.0
            ) -> RolloutRecord:
    base: RolloutRecord = make_record(RolloutSettings(), rollout_id=rollout_id, now=at)
    return replace(base, phase=phase)


def holder(rollout_id: str, revision: int = 7) -> Versioned[ActiveRolloutRecord]:
    return Versioned(ActiveRolloutRecord(rollout_id, 1.0), revision)


def named(value: bytes) -> str:
    return str(json.loads(value)["rollout_id"])


def test_the_first_rollout_claims_an_absent_key() -> None:
    txn = claim(LAYOUT, rollout("r2", Phase.PENDING), None, [rollout("r1", Phase.PROMOTED)])
    assert txn.compares == [(KEY, "absent", 0)]
    assert named(txn.puts[KEY][0]) == "r2"


def test_a_key_naming_an_active_rollout_refuses_naming_it() -> None:
    active = rollout("r1", Phase.SWITCHING)
    with pytest.raises(FailedPrecondition, match=r"acme/shop already has an active rollout "
                                                  r"r1 \(1\.0\.0 -> 1\.1\.0, switching\)"):
        claim(LAYOUT, rollout("r2", Phase.PENDING), holder("r1"), [active])


def test_a_key_naming_an_ended_rollout_is_replaced_at_its_revision() -> None:
    txn = claim(LAYOUT, rollout("r2", Phase.PENDING), holder("r1", 41),
                [rollout("r1", Phase.ABORTED)])
    assert txn.compares == [(KEY, "mod", 41)]
    assert named(txn.puts[KEY][0]) == "r2"


def test_a_key_naming_an_unknown_rollout_is_not_taken() -> None:
    with pytest.raises(FailedPrecondition, match="held by rollout r1, whose record is not "
                                                  "readable"):
        claim(LAYOUT, rollout("r2", Phase.PENDING), holder("r1", 41), [])


def test_an_active_rollout_an_older_release_wrote_without_a_key_refuses() -> None:
    with pytest.raises(FailedPrecondition, match="active rollout r1"):
        claim(LAYOUT, rollout("r2", Phase.PENDING), None, [rollout("r1", Phase.DEPLOYING)])


def test_the_terminal_write_releases_only_its_own_key() -> None:
    ended = rollout("r1", Phase.PROMOTED)
    assert release(LAYOUT, ended, holder("r1", 9)).deletes == [KEY]
    assert release(LAYOUT, ended, holder("r1", 9)).compares == [(KEY, "mod", 9)]
    assert release(LAYOUT, ended, holder("r0")).size == 0
    assert release(LAYOUT, ended, None).size == 0
    assert release(LAYOUT, rollout("r1", Phase.SWITCHING), holder("r1")).size == 0


def test_take_over_gives_a_legacy_active_rollout_its_key() -> None:
    done = reconcile(LAYOUT, "acme", "shop", None, [(rollout("r1"), 5)], 200.0)
    assert done.keep is not None and done.keep.rollout_id == "r1" and not done.failed
    assert done.txn.compares == [(KEY, "absent", 0)] and named(done.txn.puts[KEY][0]) == "r1"


def test_take_over_drops_a_key_naming_an_ended_rollout() -> None:
    done = reconcile(LAYOUT, "acme", "shop", holder("r1", 3),
                     [(rollout("r1", Phase.ROLLED_BACK), 5)], 200.0)
    assert done.keep is None and done.txn.deletes == [KEY]
    assert done.txn.compares == [(KEY, "mod", 3)]


def test_take_over_changes_nothing_when_key_and_records_agree() -> None:
    done = reconcile(LAYOUT, "acme", "shop", holder("r1"),
                     [(rollout("r1"), 5), (rollout("r0", Phase.PROMOTED, 50.0), 4)], 200.0)
    assert done.txn.empty and done.txn.size == 0 and not done.failed


@given(st.lists(st.sampled_from(list(Phase)), min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(0, 5)))
def test_take_over_leaves_exactly_one_active_rollout(phases: list[Phase],
                                                     keyed: int | None) -> None:
    history = [(rollout(f"r{n}", phase, at=100.0 + n), 10 + n) for n, phase in enumerate(phases)]
    key = holder(f"r{keyed}") if keyed is not None else None
    done = reconcile(LAYOUT, "acme", "shop", key, history, 500.0)
    active = [r for r, _ in history if r.active]
    if not active:
        assert done.keep is None and not done.failed
        return
    assert done.keep is not None
    keyed_active = [r for r in active if key is not None and r.rollout_id == key.value.rollout_id]
    assert done.keep == (keyed_active or active)[0], "the key's, else the oldest, stays"
    assert {r.rollout_id for r in done.failed} == {r.rollout_id for r in active} - {
        done.keep.rollout_id}
    for failed in done.failed:
        written = decode_record(done.txn.puts[LAYOUT.rollout("acme", "shop",
                                                              failed.rollout_id)][0])
        assert written.phase is Phase.FAILED and done.keep.rollout_id in written.reason
    if not keyed_active:
        assert named(done.txn.puts[KEY][0]) == done.keep.rollout_id


async def test_a_runner_meeting_an_invalid_transition_stops_and_says_why() -> None:
    # Another rollout moved the unit on: this one cannot enter deploying.
    world = World(unit_state=DeployState.ROLLING_OUT)
    calls = []
    original = world.set_unit_state

    async def counted(record: RolloutRecord, action: object) -> None:
        calls.append(action)
        await original(record, action)

    world.set_unit_state = counted
    end = await world.run(make_record(RolloutSettings(strategy=Strategy.CANARY)))

    assert end.phase is Phase.FAILED and end.terminal
    assert "invalid transition from rolling_out to deploying" in end.reason
    assert "stopped" in end.reason and end.failure[-1] == end.reason
    assert len(calls) == 1, "not retried"
    assert [r.phase for r in world.commits] == [Phase.DEPLOYING, Phase.FAILED]
    assert world.unit_states == [] and world.starts == 0, "nothing else was done"
    assert world.event_types()[-1] == "rollout.failed"
    assert end.reason in world.events[-1].message


async def test_an_ended_rollout_whose_last_state_is_refused_is_not_retried_forever() -> None:
    # Promoted (committed by a leader that died before its actions), but the unit was
    # moved elsewhere meanwhile: its last action can never be carried out.
    world = World(unit_state=DeployState.IDLE)
    promoted = replace(make_record(RolloutSettings()), phase=Phase.PROMOTED, seq=9,
                       ended_at=1.0)
    end = await world.run(promoted, limit_s=600.0)

    assert end.phase is Phase.PROMOTED and end.seq == 10
    assert "invalid transition from idle to running" in end.failure[-1]
    assert world.event_types() == ["rollout.failed"]


async def test_an_ended_rollout_whose_last_actions_keep_failing_is_given_up() -> None:
    world = World(fail_actions={"state"})  # etcd refuses the unit's last state, every time
    promoted = replace(make_record(RolloutSettings()), phase=Phase.PROMOTED, seq=9,
                       ended_at=1.0)
    end = await world.run(promoted, limit_s=600.0)
    assert end == promoted and world.commits == [], "given up, nothing rewritten"
