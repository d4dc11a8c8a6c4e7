"""Escalations on an in-memory store with the real placement writer and command dispatch: an
escalated instance is re-placed once on the other host, its escalated replacement marks the
version failing, and neither the same leader nor a new one re-places again."""

from __future__ import annotations

from test_host_drain import LAYOUT, Rig, place_on_h1

from common.event_types import COORDINATOR_ONLY, EventType
from common.stream_commands import StartInstance
from common.stream_messages import ObservedInstance
from coordinator.fleet.cordons import HostCordons
from coordinator.fleet.escalations import Escalations
from coordinator.state.records import UnitRecord, encode


class Errors:
    """Instances their agent reports in error (the test decides)."""

    def __init__(self) -> None:
        self.failed: set[str] = set()

    def known_state(self, instance_id: str) -> ObservedInstance | None:
        state = "error" if instance_id in self.failed else "running"
        return ObservedInstance(instance_id, "", "shop", "web", "1.0.0", "blue", state, 0.0)


def escalations(rig: Rig, known: Errors) -> Escalations:
    return Escalations(state=rig.state, layout=LAYOUT, writes=rig.writes, events=rig.events,
                       placement=rig.placement, commands=rig.dispatch, known=known)


async def escalate(rig: Rig, known: Errors, instance_id: str) -> None:
    known.failed.add(instance_id)
    await rig.events.emit(EventType.ESCALATION.value, "container_crash: crash loop",
                          apartment="shop", unit="web", version="1.0.0",
                          instance_id=instance_id)


def starts(rig: Rig, host_id: str) -> list[str]:
    session, found = rig.sessions[host_id], []
    while not session._outbox.empty():
        outgoing = session._outbox.get_nowait()
        if outgoing is not None and isinstance(outgoing.command, StartInstance):
            found.append(outgoing.command.instance_id)
    return found


def of_type(rig: Rig, kind: EventType) -> list[str]:
    return [e.message for e in rig.state.event_history() if e.type == kind]


async def test_replaced_once_on_the_other_host_then_the_version_marked_failing() -> None:
    rig, known = Rig(), Errors()
    rig.store.put(LAYOUT.unit("shop", "web"), encode(UnitRecord(
        "shop", "web", "running", "1.0.0", "1.0.0", "b1", 1)))
    [old] = await place_on_h1(rig, 1)
    duty = escalations(rig, known)
    await duty.tick()
    assert rig.state.instances.keys() == {old.instance_id}  # healthy: nothing to do

    await escalate(rig, known, old.instance_id)
    await duty.tick()
    [new] = rig.state.instances_on("h2")
    assert old.instance_id not in rig.state.instances and new.replaces == old.instance_id
    assert new.after_escalation.startswith(f"{old.instance_id} escalated on h1: ")
    assert starts(rig, "h2") == [new.instance_id]
    assert [s.instance_id for s in rig.stops("h1")] == [old.instance_id]
    [why] = of_type(rig, EventType.INSTANCE_REPLACED)
    assert f"re-placed once as {new.instance_id} on h2" in why
    for leader in (duty, escalations(rig, known)):  # the same leader or a new one: no more
        await leader.tick()
    assert list(rig.state.instances) == [new.instance_id]

    await escalate(rig, known, new.instance_id)
    await duty.tick()
    unit = rig.state.units[("shop", "web")].value
    assert unit.state == "failed"
    assert "escalated again after it was re-placed" in unit.failing_versions["1.0.0"]
    [failing] = of_type(rig, EventType.VERSION_FAILING)
    assert "not re-placed again" in failing and "not a host problem" in failing
    for leader in (duty, escalations(rig, known)):
        await leader.tick()
    assert list(rig.state.instances) == [new.instance_id] and not starts(rig, "h1")
    assert len(of_type(rig, EventType.VERSION_FAILING)) == 1
    assert {EventType.INSTANCE_REPLACED, EventType.VERSION_FAILING} <= COORDINATOR_ONLY


async def test_no_other_host_fits_says_why_once_and_keeps_the_instance() -> None:
    rig, known = Rig(), Errors()
    [old] = await place_on_h1(rig, 1)
    await HostCordons(rig.state, LAYOUT, rig.writes, rig.events).cordon("h2")
    await escalate(rig, known, old.instance_id)
    duty = escalations(rig, known)
    await duty.tick()
    await duty.tick()
    unplaceable = [e for e in rig.state.event_history() if e.type == "instance.unplaceable"]
    assert len(unplaceable) == 1 and "cordoned" in unplaceable[0].message
    assert list(rig.state.instances) == [old.instance_id]  # never back onto its own host
