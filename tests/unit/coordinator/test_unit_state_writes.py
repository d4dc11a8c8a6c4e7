"""The rollout's unit-state writes through EtcdRolloutRecords when the watch-fed cache lags
behind the commits (as at 150,000 instances): each decision is taken on the rollout's own
last write, so a first deploy goes deploying -> rolling_out -> running however late the
cache is, and never stops on an "invalid transition" from a state it already left."""

from __future__ import annotations

from memory_store import CurrentCache, LaggingCache, Leading, MemoryStore

from common.clock import FakeClock
from common.lifecycle import DeployState
from coordinator.rollouts.actions import SetUnitState
from coordinator.rollouts.controls import new_rollout
from coordinator.rollouts.etcd_records import EtcdRolloutRecords
from coordinator.rollouts.record import RolloutRecord
from coordinator.rollouts.settings import RolloutSettings
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import UnitRecord, decode

LAYOUT = KeyLayout()
FIRST_DEPLOY = (DeployState.DEPLOYING, DeployState.ROLLING_OUT, DeployState.RUNNING)


def first_deploy() -> RolloutRecord:
    return new_rollout("r1", "shop", "web", "b1", "", "1.0.0", RolloutSettings(), 100.0)


def rig(lagging: bool) -> tuple[MemoryStore, EtcdRolloutRecords]:
    state = ClusterState(LAYOUT)
    store = MemoryStore(state)
    cache = LaggingCache(store) if lagging else CurrentCache()
    writes = FencedWrites(store, Leading(), cache)
    clock = FakeClock()
    return store, EtcdRolloutRecords(writes, LAYOUT, state, EventLog(writes, LAYOUT, state, clock),
                                     clock)


def stored_state(store: MemoryStore) -> str:
    return decode(UnitRecord, store.entries[LAYOUT.unit("shop", "web")].value).state


async def write_first_deploy(records: EtcdRolloutRecords, store: MemoryStore) -> list[str]:
    record, seen = first_deploy(), []
    for state in FIRST_DEPLOY:
        stable = record.to_version if state is DeployState.RUNNING else ""
        await records.set_unit_state(record, SetUnitState(state.value, stable_version=stable))
        seen.append(stored_state(store))
    return seen


async def test_a_first_deploy_moves_through_its_states_on_a_lagging_cache() -> None:
    store, records = rig(lagging=True)
    seen = await write_first_deploy(records, store)
    assert seen == [s.value for s in FIRST_DEPLOY]
    unit = decode(UnitRecord, store.entries[LAYOUT.unit("shop", "web")].value)
    assert unit.stable_version == "1.0.0"


async def test_the_writes_do_not_wait_for_the_cache_when_nothing_follows() -> None:
    store, records = rig(lagging=True)
    await records.set_unit_state(first_deploy(), SetUnitState(DeployState.DEPLOYING.value))
    assert store.held, "the write itself does not wait for the watch"


async def test_a_current_cache_gives_the_same_states() -> None:
    store, records = rig(lagging=False)
    assert await write_first_deploy(records, store) == [s.value for s in FIRST_DEPLOY]
