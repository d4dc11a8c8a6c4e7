"""The console entry point, records on disk, events and dumps."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from agent.instances.dumps import DumpWriter
from agent.instances.events import AgentEvent, EventBus
from agent.instances.spec import InstanceSpec, Slot
from agent.instances.store import InstanceRecord, RecordStore
from agent.main import main
from common.clock import FakeClock
from common.lifecycle import InstanceState, LifecycleRecord
from common.recovery import FailureKind, RecoveryState


def test_help_and_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--host-id" in out and "--advertise-address" in out and "LANDLORD_AGENT_" in out
    assert main(["--advertise-address", "x", "--log-level", "loud"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "landlord-agent: --advertise-address: advertise_address: 'x' is not an IP address",
        "landlord-agent: --log-level: log_level: 'loud' is not DEBUG, INFO, WARNING, ERROR"]
    assert main(["--host-id", "h", "--check-config"]) == 0
    assert 'host_id = "h"' in capsys.readouterr().out


def test_records_round_trip_and_corrupt_ones_are_set_aside(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    spec = InstanceSpec(
        apartment="a",
        unit="u",
        version="1.0.0",
        slot=Slot.GREEN,
        instance_id="i1",
        image="u:1",
        port=20000,
    )
    life = LifecycleRecord.new("1.0.0", FakeClock())
    life.transition(InstanceState.INITIALIZING, "start", 1.0)
    record = InstanceRecord(
        spec,
        life,
        container_id="c1",
        generation=2,
        classid=0x11,
        recovery=RecoveryState(FailureKind.CONTAINER_CRASH, 1, 2, None),
    )
    store.save(record)
    (store.directory / "broken.json").write_text("{not json")
    [loaded] = store.load_all()
    assert loaded.to_dict() == record.to_dict()
    assert (store.directory / "broken.corrupt").exists()
    store.delete("i1")
    assert store.load_all() == []


async def test_event_bus_fans_out_and_closes() -> None:
    bus = EventBus(history=2)
    received: list[str] = []

    async def consume() -> None:
        async for event in bus.subscribe():
            received.append(event.type)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    for name in ("a", "b", "c"):
        bus.publish(AgentEvent(name, "i", "u", "1", 0.0, {"k": 1}))
    bus.close()
    await asyncio.wait_for(task, 1)
    assert received == ["a", "b", "c"]
    assert [e.type for e in bus.recent()] == ["b", "c"]
    assert bus.recent("c")[0].to_dict() == {
        "type": "c",
        "instance": "i",
        "unit": "u",
        "version": "1",
        "time": 0.0,
        "details": {"k": 1},
    }


def test_memory_dump_copies_proc_and_cgroup_files(tmp_path: Path) -> None:
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "smaps_rollup").write_text("Rss: 1 kB\n")
    (proc / "status").write_text("VmRSS: 1 kB\n")
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    (cgroup / "memory.stat").write_text("rss 1\n")
    writer = DumpWriter(tmp_path / "data", proc_root=tmp_path / "proc")
    path = writer.write_memory(
        "i1", 3, 0.0, pid=42, cgroup_memory_dir=cgroup, samples=[(0.0, 1)], reason="leak"
    )
    assert sorted(os.listdir(path)) == [
        "cgroup-memory.stat",
        "memory.json",
        "proc-smaps_rollup",
        "proc-status",
    ]
    assert json.loads((path / "memory.json").read_text())["reason"] == "leak"
