"""The in-memory table of this host's instance records and its read API."""

from __future__ import annotations

import pytest

from agent.instances.records import RecordTable
from agent.instances.spec import InstanceSpec, Slot
from agent.instances.store import InstanceRecord
from common.clock import FakeClock
from common.errors import NotFound
from common.lifecycle import InstanceState, LifecycleRecord

S = InstanceState


def record(instance_id: str, port: int, state: InstanceState = S.RUNNING,
           container: str | None = None) -> InstanceRecord:
    spec = InstanceSpec("shop", "web", "1.0.0", Slot.BLUE, instance_id, "demo:1", port)
    life = LifecycleRecord.new("1.0.0", FakeClock())
    life.state = state
    return InstanceRecord(spec, life, container_id=container)


def test_reads_find_get_and_list() -> None:
    table = RecordTable()
    table.add(record("a", 20001))
    assert table.find("a") is table.get("a") and table.find("b") is None
    with pytest.raises(NotFound, match="no instance 'b'"):
        table.get("b")
    listed = table.all()
    table.discard("a")
    assert [r.instance_id for r in listed] == ["a"] and table.all() == []


def test_a_port_is_held_by_live_instances_only() -> None:
    table = RecordTable()
    table.add(record("a", 20001))
    table.add(record("b", 20002, S.STOPPED))
    assert table.port_holder(20001) is table.get("a")
    assert table.port_holder(20001, ignore={"a"}) is None
    assert table.port_holder(20002) is None


def test_only_an_unexpected_exit_of_the_current_container_is_a_crash() -> None:
    table = RecordTable()
    table.add(record("a", 20001, container="c2"))
    table.bind("c1", "a")  # an older generation
    table.bind("c2", "a")
    assert table.crashed_instance("c1") is None
    assert table.crashed_instance("c2") is table.get("a")
    assert table.crashed_instance("unknown") is None
    table.expect_exit("c2")
    assert table.crashed_instance("c2") is None and table.owns_container("c2")
    table.unbind("c2")
    assert not table.owns_container("c2")
    table.bind("c2", "a")
    assert table.crashed_instance("c2") is table.get("a")  # unbinding forgot the expectation
