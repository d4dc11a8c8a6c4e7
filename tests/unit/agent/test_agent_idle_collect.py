"""A whole idle unit collected at the leader's word (issue 17): the record stays in
``collected`` with the container and its snapshot state dir gone, and a start of the same
id wakes it with the state back from the backup."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.instances.spec import StateMode
from common.lifecycle import InstanceState
from tests.unit.agent.test_agent_supervisor import make_rig, spec


async def test_collected_keeps_a_record_frees_the_container_and_wakes_with_its_state(
        tmp_path: Path) -> None:
    rig = await make_rig(tmp_path)
    try:
        rig.healthy.add(20001)
        sleepy = spec("s1", 20001, state_mode=StateMode.SNAPSHOT)
        first = await rig.service.start_instance(sleepy)
        state_dir = tmp_path / "state" / "a" / "u" / "s1"
        await asyncio.to_thread((state_dir / "counter.json").write_text, '{"count": 7}')
        record = rig.service.records.get("s1")
        assert await rig.service.gc.collect_instance(record, "idle unit", keep=True)

        kept = rig.service.instance("s1")
        assert kept.state == InstanceState.COLLECTED.value and kept.container_id is None
        assert kept.metadata["collected"] == "idle unit" and "backup" in kept.metadata
        assert first.container_id in rig.runtime.by_call("remove")
        assert not await asyncio.to_thread(state_dir.exists)  # its disk is freed
        # collecting again, or by this host's own idle plan, does nothing
        assert not await rig.service.gc.collect_instance(record, "again", keep=True)

        assert rig.service.gc.restore(sleepy) is not None
        woken = await rig.service.start_instance(sleepy)
        assert woken.state == InstanceState.RUNNING.value
        assert woken.container_id not in (None, first.container_id)
        text = await asyncio.to_thread((state_dir / "counter.json").read_text)
        assert text == '{"count": 7}'
        assert rig.service.gc.restore(sleepy) is None  # the state is there: left alone
    finally:
        await rig.service.close()
