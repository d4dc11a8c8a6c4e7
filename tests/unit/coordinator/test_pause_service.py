"""PauseService on an in-memory store: the marks and the event are written first, then every
host gets the route without the paused instances before the instance's host is told to
freeze it; a resume thaws, then routes; a pause during a rollout is refused naming it."""

from __future__ import annotations

import json

import pytest
from memory_store import CurrentCache, Leading
from test_placement_dispatch import LAYOUT, Rig

from common.clock import FakeClock
from common.errors import FailedPrecondition
from common.stream_commands import PauseInstance, ResumeInstance, SetRoute
from common.stream_messages import ObservedInstance
from coordinator.fleet.known_fleet import KnownFleet
from coordinator.rollouts.controls import new_rollout
from coordinator.rollouts.etcd_records import EtcdRolloutRecords
from coordinator.rollouts.pause_service import PauseService
from coordinator.rollouts.settings import RolloutSettings
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites


async def rig_with_two() -> tuple[Rig, PauseService, EtcdRolloutRecords, list[str]]:
    rig = Rig()
    clock = FakeClock()
    writes = FencedWrites(rig.store, Leading(), CurrentCache())
    events = EventLog(writes, LAYOUT, rig.state, clock)
    records = EtcdRolloutRecords(writes, LAYOUT, rig.state, events, clock)
    placed = await rig.placement.place("shop", "web", "1.0.0", "blue", 2, "b1")
    await rig.dispatch.set_split("shop", "web", {"1.0.0": 100.0}, "b1", 18080, "/healthz")
    for record in placed:
        rig.fleet.observe(ObservedInstance(record.instance_id, record.host_id, "shop", "web",
                                           "1.0.0", "blue", "running", 1.0))
    for host_id in ("h1", "h2"):
        rig.sent(host_id)
    service = PauseService(state=rig.state, layout=LAYOUT, writes=writes, events=events,
                           clock=clock, rollouts=records, routes=rig.dispatch, hosts=rig.fleet,
                           known=KnownFleet(rig.state, rig.fleet), settle_s=0.5)
    return rig, service, records, sorted(r.instance_id for r in placed)


async def test_pause_marks_first_routes_everywhere_then_freezes_and_resume_undoes_it() -> None:
    rig, service, _, (first, second) = await rig_with_two()
    host = rig.state.instances[first].value.host_id
    other = "h2" if host == "h1" else "h1"

    change = await service.pause("shop", "web", [first])
    assert (change.changed, change.paused) == ((first,), (first,))
    assert rig.state.instances[first].value.paused and not rig.state.instances[
        second].value.paused
    sent = rig.sent(host)
    assert isinstance(sent[0], SetRoute) and sent[-1] == PauseInstance(first, 0.5)
    route = sent[0]
    assert {s.server: s.state for s in route.servers} == {first: "maint", second: "ready"}
    assert route.retry_after_s == 0  # the other instance serves
    assert [type(c) for c in rig.sent(other)] == [SetRoute]  # every host drains it
    assert (await service.pause("shop", "web", [first])).changed == ()  # already paused
    assert rig.sent(host) == []

    whole = await service.pause("shop", "web")
    assert whole.changed == (second,) and whole.paused == (first, second)
    routes = [c for c in rig.sent("h1") if isinstance(c, SetRoute)]
    assert routes[-1].retry_after_s == 10  # every instance paused: 503 with Retry-After

    resumed = await service.resume("shop", "web")
    assert (resumed.changed, resumed.paused) == ((first, second), ())
    assert not any(r.value.paused for r in rig.state.instances.values())
    for host_id in ("h1", "h2"):
        sent = rig.sent(host_id)
        assert isinstance(sent[-1], SetRoute) and sent[-1].retry_after_s == 0
        assert [c for c in sent if isinstance(c, ResumeInstance)]
    assert (await service.resume("shop", "web")).changed == ()  # nothing paused: a no-op
    written = [json.loads(e.value)["type"] for k, e in sorted(rig.store.entries.items())
               if k.startswith(LAYOUT.events)]
    assert written == ["unit.paused", "unit.paused", "unit.resumed"]


async def test_a_pause_during_a_rollout_is_refused_naming_it_but_a_resume_is_not() -> None:
    rig, service, records, (first, _) = await rig_with_two()
    await service.pause("shop", "web", [first])
    rollout = new_rollout("r9", "shop", "web", "b1", "1.0.0", "1.1.0", RolloutSettings(),
                          0.0)
    await rig.store.commit(records.creation(rollout), None)
    with pytest.raises(FailedPrecondition, match="already has an active rollout r9"):
        await service.pause("shop", "web")
    assert (await service.resume("shop", "web")).changed == (first,)
