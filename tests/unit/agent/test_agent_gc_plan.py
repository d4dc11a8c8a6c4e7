"""Pure GC decisions: idle instances, images to keep, disk eviction by age and watermark."""

from __future__ import annotations

from agent.gc.plan import (
    CacheItem,
    images_to_keep,
    plan_cache_eviction,
    plan_idle_collection,
)
from agent.instances.spec import InstanceSpec, Slot
from agent.instances.store import InstanceRecord
from common.clock import FakeClock
from common.lifecycle import InstanceState, LifecycleRecord


def _record(
    instance_id: str, version: str, idle_timeout: float, state: InstanceState, clock: FakeClock
) -> InstanceRecord:
    spec = InstanceSpec(
        apartment="a",
        unit="u",
        version=version,
        slot=Slot.BLUE,
        instance_id=instance_id,
        image=f"u:{version}",
        port=20000,
        idle_timeout=idle_timeout,
    )
    life = LifecycleRecord.new(version, clock)
    life.state = state
    return InstanceRecord(spec, life)


def test_idle_plan_spares_stable_active_and_not_running() -> None:
    clock = FakeClock()
    records = [
        _record("idle", "1.0.0", 60, InstanceState.RUNNING, clock),
        _record("stable", "2.0.0", 60, InstanceState.RUNNING, clock),
        _record("active", "1.0.0", 60, InstanceState.RUNNING, clock),
        _record("error", "1.0.0", 60, InstanceState.ERROR, clock),
        _record("forever", "1.0.0", 0, InstanceState.RUNNING, clock),
    ]
    clock.advance(100)
    seen = {"active": clock.now() - 10}
    plan = plan_idle_collection(
        records,
        clock.now(),
        {("a", "u"): "2.0.0"},
        lambda r: max(r.lifecycle.last_activity, seen.get(r.instance_id, 0.0)),
    )
    decisions = {d.instance_id: d for d in plan}
    assert [d.instance_id for d in plan if d.collect] == ["idle"]
    assert "idle for 100 s" in decisions["idle"].reason
    assert "stable version" in decisions["stable"].reason
    assert "active 10 s ago" in decisions["active"].reason
    assert "state error" in decisions["error"].reason
    assert "forever" not in decisions


def test_images_of_the_three_latest_versions_are_kept() -> None:
    history = {
        "a/u": {v: f"u:{v}" for v in ("1.0.0", "1.10.0", "1.9.0", "2.0.0-rc.1", "0.1.0", "latest")},
        "a/w": {"3.0.0": "w:3"},
    }
    keep = images_to_keep(history, 3, in_use={"u:0.1.0"})
    assert keep == {"u:1.10.0", "u:1.9.0", "u:2.0.0-rc.1", "u:0.1.0", "w:3"}


def _item(kind: str, ref: str, size: int, created: float) -> CacheItem:
    return CacheItem(kind, ref, size, created)


def test_age_alone_below_the_high_watermark() -> None:
    items = [
        _item("dump", "old", 5, 0.0),
        _item("dump", "new", 5, 900.0),
        _item("image", "img", 50, 0.0),
        _item("container", "c", 0, 0.0),
    ]
    chosen = plan_cache_eviction(
        items, 1000.0, 50, 100, 0.85, 0.80, {"dump": 500.0, "container": 500.0}
    )
    assert [i.ref for i in chosen] == ["old", "c"]


def test_above_the_watermark_oldest_first_down_to_low() -> None:
    items = [
        _item("image", "i1", 10, 100.0),
        _item("dump", "d1", 10, 100.0),
        _item("image", "i2", 10, 200.0),
        _item("image", "i3", 10, 300.0),
    ]
    chosen = plan_cache_eviction(items, 1000.0, 95, 100, 0.85, 0.80, {})
    assert [i.ref for i in chosen] == ["d1", "i1"]  # 95 -> 75, dumps first at equal age
    assert plan_cache_eviction(items, 1000.0, 85, 100, 0.85, 0.80, {}) == []
