"""The unit's active-rollout key through EtcdRolloutRecords on an in-memory store: claimed
with the record, refused while held (also when another Deploy wins the race between the
decision and the commit), released with the terminal record, replaced when stale."""

from __future__ import annotations

from dataclasses import replace

import pytest
from memory_store import CurrentCache, Leading, MemoryStore

from common.clock import FakeClock
from common.errors import FailedPrecondition
from coordinator.rollouts.controls import new_rollout
from coordinator.rollouts.etcd_records import EtcdRolloutRecords
from coordinator.rollouts.record import Phase, RolloutRecord, encode_record
from coordinator.rollouts.settings import RolloutSettings
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import ActiveRolloutRecord, encode

LAYOUT = KeyLayout()
UNIT = ("shop", "web")


def rollout(rollout_id: str, at: float = 100.0) -> RolloutRecord:
    return new_rollout(rollout_id, "shop", "web", "b1", "1.0.0", "1.1.0", RolloutSettings(), at)


class Rig:
    def __init__(self) -> None:
        self.state = ClusterState(LAYOUT)
        self.store = MemoryStore(self.state)
        clock = FakeClock()
        writes = FencedWrites(self.store, Leading(), CurrentCache())
        self.records = EtcdRolloutRecords(writes, LAYOUT, self.state,
                                          EventLog(writes, LAYOUT, self.state, clock), clock)

    def holder(self) -> str:
        found = self.state.active_rollouts.get(UNIT)
        return found.value.rollout_id if found else ""

    def write(self, record: RolloutRecord, key: bool = True) -> None:
        """As another coordinator's committed Deploy would have it."""
        self.store.put(LAYOUT.rollout("shop", "web", record.rollout_id), encode_record(record))
        if key:
            self.store.put(LAYOUT.active_rollout(*UNIT),
                           encode(ActiveRolloutRecord(record.rollout_id, record.created_at)))


async def test_held_while_active_released_when_ended() -> None:
    rig = Rig()
    await rig.records.create(rollout("r1"))
    assert rig.holder() == "r1"
    written = list(rig.store.commits[-1].puts)
    assert written.index(LAYOUT.rollout("shop", "web", "r1")) < written.index(
        LAYOUT.active_rollout(*UNIT)), "the record reaches the cache before its key"
    commits = len(rig.store.commits)
    with pytest.raises(FailedPrecondition, match="already has an active rollout r1"):
        await rig.records.create(rollout("r2", 101.0))
    assert len(rig.store.commits) == commits, "a refusal writes nothing"

    stored, revision = await rig.records.load(rollout("r1"))
    await rig.records.save(replace(stored, phase=Phase.PROMOTED, seq=1), revision)
    assert rig.holder() == ""
    await rig.records.create(rollout("r2", 101.0))
    assert rig.holder() == "r2"


async def test_a_deploy_that_lost_the_race_is_refused_naming_the_winner() -> None:
    rig = Rig()
    raced: list[bool] = []

    def winner_commits_first() -> None:
        if not raced:
            raced.append(True)
            rig.write(rollout("r-winner"))

    rig.store.before_commit = winner_commits_first
    with pytest.raises(FailedPrecondition, match="already has an active rollout r-winner"):
        await rig.records.create(rollout("r-loser"))
    assert rig.holder() == "r-winner"
    assert [r.rollout_id for r, _ in rig.records.history(*UNIT)] == ["r-winner"]


async def test_a_key_naming_an_ended_rollout_is_taken_over() -> None:
    rig = Rig()
    rig.write(replace(rollout("r1"), phase=Phase.ABORTED))
    await rig.records.create(rollout("r2", 101.0))
    assert rig.holder() == "r2"


async def test_a_new_leader_gives_a_keyless_active_rollout_its_key() -> None:
    rig = Rig()
    rig.write(rollout("r1"), key=False)
    assert [r.rollout_id for r, _ in await rig.records.take_over()] == ["r1"]
    assert rig.holder() == "r1"
    commits = len(rig.store.commits)
    await rig.records.take_over()
    assert len(rig.store.commits) == commits, "consistent: nothing written"
