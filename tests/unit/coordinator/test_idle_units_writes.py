"""The leader's idle collection and wake on an in-memory store (issue 17): marks written
with their event before any command, collect commands to the instances' hosts, a wake
clearing the marks and starting the same instances, and the routes holding requests."""

from __future__ import annotations

from collections.abc import Sequence

from memory_store import CurrentCache, Leading, MemoryStore

from common.clock import FakeClock
from common.resources import Resources
from common.stream_commands import AgentCommand, StopInstance
from common.stream_messages import ObservedInstance
from common.unit_spec import UnitSpec
from common.versions import VersionTag
from coordinator.fleet.idle_units import IdleUnits
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import InstanceRecord, UnitRecord, VersionRecord, encode

LAYOUT = KeyLayout()
NOW = 1_700_000_000.0


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, AgentCommand]] = []
        self.started: list[str] = []
        self.routes: list[tuple[str, str]] = []
        self.stop_grace_s = 3.0
        self.last = 0.0
        self.states: dict[str, str] = {}

    def send(self, host_id: str, command: AgentCommand) -> bool:
        self.sent.append((host_id, command))
        return True

    async def start_instances(self, records: Sequence[InstanceRecord]) -> int:
        self.started += [r.instance_id for r in records]
        return len(records)

    async def set_route(self, apartment: str, unit: str) -> int:
        self.routes.append((apartment, unit))
        return 1

    def last_request(self, apartment: str, unit: str) -> float:
        return self.last

    def known_state(self, instance_id: str) -> ObservedInstance | None:
        state = self.states.get(instance_id)
        return None if state is None else ObservedInstance(
            instance_id, "h1", "shop", "web", "1.0.0", "blue", state, 1.0)


def rig() -> tuple[IdleUnits, ClusterState, Recorder, FakeClock, MemoryStore]:
    state = ClusterState(LAYOUT)
    store = MemoryStore(state)
    clock = FakeClock(NOW)
    writes = FencedWrites(store, Leading(), CurrentCache())
    events = EventLog(writes, LAYOUT, state, clock)
    spec = UnitSpec("shop", "web", "1.0.0", "demo:1", 0, service_port=9000, idle_timeout_s=60)
    store.put(LAYOUT.version("shop", "web", "1.0.0"), encode(
        VersionRecord(VersionTag("shop/web", "1.0.0", 1.0, spec.checksum(), spec))))
    store.put(LAYOUT.unit("shop", "web"), encode(
        UnitRecord("shop", "web", "running", "1.0.0", "1.0.0", "b", 2)))
    recorder = Recorder()
    for iid, host in (("w1", "h1"), ("w2", "h2")):
        store.put(LAYOUT.instance(iid), encode(InstanceRecord(
            iid, "shop", "web", "1.0.0", "blue", host, 20001, Resources(), NOW - 500)))
        recorder.states[iid] = "running"
    idle = IdleUnits(state=state, layout=LAYOUT, writes=writes, leadership=Leading(),
                     events=events, clock=clock, requests=recorder, commands=recorder,
                     hosts=recorder, known=recorder, hold_s=30.0)
    return idle, state, recorder, clock, store


async def test_collected_after_the_timeout_then_woken_by_a_request() -> None:
    idle, state, recorder, clock, _ = rig()
    recorder.last = NOW - 10
    assert await idle.round() == 0  # the leader just took over: it waits a full timeout
    clock.advance(80)
    assert await idle.round() == 1
    assert all(state.instances[i].value.collected for i in ("w1", "w2"))
    assert [(h, c) for h, c in recorder.sent] == [
        ("h1", StopInstance("w1", 3.0, True, True)), ("h2", StopInstance("w2", 3.0, True, True))]
    events = [e.type for e in state.event_history()]
    assert events == ["unit.collected"] and recorder.routes == [("shop", "web")]
    assert idle.holds("shop", "web")
    assert await idle.round() == 0  # collected already

    assert await idle.wake("shop", "web", "request on h2") == ("w1", "w2")
    assert recorder.started == ["w1", "w2"]
    assert not any(state.instances[i].value.collected for i in ("w1", "w2"))
    assert [e.type for e in state.event_history()][-1] == "unit.woken"
    assert idle.holds("shop", "web")  # held while it wakes ...
    clock.advance(31)
    assert not idle.holds("shop", "web")  # ... for at most hold_s
    assert await idle.wake("shop", "web", "again") == ()  # awake: nothing to do


async def test_a_request_on_any_host_or_an_unsettled_instance_keeps_it() -> None:
    idle, state, recorder, clock, _ = rig()
    await idle.round()
    clock.advance(200)
    recorder.last = NOW + 190
    assert await idle.round() == 0
    recorder.last = 0.0
    recorder.states["w2"] = "initializing"
    assert await idle.round() == 0
    assert not any(r.value.collected for r in state.instances.values())
