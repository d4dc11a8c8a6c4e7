"""The pre-created spare container: taken by a crash recovery, replaced, removed with
its instance; a stale one is never started."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.instances.events import EventType
from agent.instances.records import RecordTable
from agent.instances.spares import Spares
from agent.instances.store import InstanceRecord
from common.clock import SystemClock
from common.errors import Unavailable
from common.lifecycle import LifecycleRecord
from tests.support import async_eventually
from tests.unit.agent.fake_runtime import RecordingRuntime
from tests.unit.agent.test_agent_supervisor import make_rig, spec


def names(runtime: RecordingRuntime, call: str) -> list[str]:
    return [request.name for request in runtime.by_call(call)]


async def test_a_crash_starts_the_spare_and_a_new_spare_is_made(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path, spare_containers=True)
    try:
        rig.healthy.add(20001)
        view = await rig.service.start_instance(spec())
        sup = rig.service.supervisor

        async def spare_ready() -> bool:
            return sup.spares.get("i1") is not None

        await async_eventually(spare_ready, timeout=5, interval=0.01)
        made = sup.spares.get("i1")
        assert made is not None and made.generation == 2
        assert rig.runtime.containers[made.container_id].info.status == "created"
        assert sup.records.owns_container(made.container_id)  # the cache GC leaves it
        rig.runtime.crash(view.container_id or "")
        await rig.wait(EventType.RECOVERY_SUCCESS)
        after = rig.service.instance("i1")
        assert after.container_id == made.container_id and after.generation == 2

        async def next_spare() -> bool:
            spare = sup.spares.get("i1")
            return spare is not None and spare.generation == 3

        await async_eventually(next_spare, timeout=5, interval=0.01)
        await rig.wait(EventType.CRASH_DUMP)  # still taken, off the critical path
        # g2 was made before the crash: the recovery created nothing, then made g3
        assert names(rig.runtime, "create") == [
            "landlord-h1-i1-g1", "landlord-h1-i1-g2", "landlord-h1-i1-g3"]
        spare = sup.spares.get("i1")
        assert spare is not None
        await rig.service.stop_instance("i1", grace=0.1)
        assert spare.container_id not in rig.runtime.containers
        assert not sup.records.owns_container(spare.container_id)
        assert sup.spares.get("i1") is None
    finally:
        await rig.service.close()


async def test_no_spare_when_turned_off(tmp_path: Path) -> None:
    rig = await make_rig(tmp_path, spare_containers=False)
    try:
        rig.healthy.add(20001)
        view = await rig.service.start_instance(spec())
        rig.runtime.crash(view.container_id or "")
        await rig.wait(EventType.RECOVERY_SUCCESS)
        assert names(rig.runtime, "create") == ["landlord-h1-i1-g1", "landlord-h1-i1-g2"]
        assert rig.service.supervisor.spares.get("i1") is None
    finally:
        await rig.service.close()


def record(generation: int = 1, image: str = "img:1") -> InstanceRecord:
    made = InstanceRecord(spec(image=image), LifecycleRecord.new("1.0.0", SystemClock()))
    made.generation = generation
    return made


async def test_a_stale_spare_is_removed_not_started() -> None:
    runtime = RecordingRuntime()
    records = RecordTable()
    gate = asyncio.Event()

    async def create(rec: InstanceRecord, generation: int) -> str:
        await gate.wait()
        return f"c-{rec.spec.image}-g{generation}"

    spares = Spares(runtime, records, create)
    old = record(image="img:1")
    spares.prepare(old)
    spares.prepare(old)  # one at a time
    gate.set()
    # a take while it is being made waits for it
    assert await spares.take(old, 2) == "c-img:1-g2"
    assert spares.get("i1") is None
    spares.prepare(old)
    await asyncio.sleep(0)
    newer = record(image="img:2")  # not the spec it was made for
    assert await spares.take(newer, 2) is None
    assert runtime.by_call("remove") == ["c-img:1-g2"]
    assert not records.owns_container("c-img:1-g2")
    spares.prepare(old)
    await asyncio.sleep(0)
    assert await spares.take(old, 3) is None  # made for generation 2


async def test_a_failed_spare_creation_leaves_none_and_launches_create() -> None:
    async def create(rec: InstanceRecord, generation: int) -> str:
        raise Unavailable("engine busy")

    spares = Spares(RecordingRuntime(), RecordTable(), create)
    spares.prepare(record())
    assert await spares.take(record(), 2) is None
    await spares.drop("i1")  # nothing to remove


async def test_drop_waits_for_a_spare_being_made_then_removes_it() -> None:
    runtime = RecordingRuntime()
    records = RecordTable()

    async def create(rec: InstanceRecord, generation: int) -> str:
        await asyncio.sleep(0.01)
        return "c1"

    spares = Spares(runtime, records, create)
    spares.prepare(record())
    await spares.drop("i1")
    assert runtime.by_call("remove") == ["c1"]
    assert spares.get("i1") is None and not records.owns_container("c1")


async def test_an_adopting_agent_replaces_the_spare_its_predecessor_left(tmp_path: Path) -> None:
    first = await make_rig(tmp_path, spare_containers=True)
    first.healthy.add(20001)
    view = await first.service.start_instance(spec())

    async def spare_ready(rig: Any) -> bool:
        return rig.service.supervisor.spares.get("i1") is not None

    await async_eventually(lambda: spare_ready(first), timeout=5, interval=0.01)
    left = first.service.supervisor.spares.get("i1")
    await first.service.close()  # containers stay; the spare is forgotten
    second = await make_rig(tmp_path, first.runtime, spare_containers=True)
    try:
        second.healthy.add(20001)
        assert second.service.instance("i1").container_id == view.container_id
        await async_eventually(lambda: spare_ready(second), timeout=5, interval=0.01)
        spare = second.service.supervisor.spares.get("i1")
        assert left is not None and spare is not None and spare.generation == 2
        # the leftover held the name: removed, and one container per name remains
        assert left.container_id not in first.runtime.containers
        assert [c.info.name for c in first.runtime.containers.values()] == [
            "landlord-h1-i1-g1", "landlord-h1-i1-g2"]
    finally:
        await second.service.close()
