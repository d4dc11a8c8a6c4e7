"""Pure GC decisions: idle instances, images to keep, disk eviction by age and watermark."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.gc.plan import (
    CacheItem,
    evictable_images,
    images_to_keep,
    plan_cache_eviction,
    plan_idle_collection,
)
from agent.instances.spec import InstanceSpec, Slot
from agent.instances.store import InstanceRecord
from agent.runtime.protocol import ImageInfo
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
        _record("paused", "1.0.0", 60, InstanceState.PAUSED, clock),
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
    assert "state paused" in decisions["paused"].reason  # an operator froze it to keep it
    assert "forever" not in decisions


def test_images_of_the_three_latest_versions_are_kept() -> None:
    history = {
        "a/u": {v: f"u:{v}" for v in ("1.0.0", "1.10.0", "1.9.0", "2.0.0-rc.1", "0.1.0", "latest")},
        "a/w": {"3.0.0": "w:3"},
    }
    keep = images_to_keep(history, 3, in_use={"u:0.1.0"})
    assert keep == {"u:1.10.0", "u:1.9.0", "u:2.0.0-rc.1", "u:0.1.0", "w:3"}


PINNED = "127.0.0.1:5000/app@sha256:" + "1" * 64


def test_protected_versions_are_kept_beyond_the_latest_ones() -> None:
    history = {"a/app": {f"1.{n}.0": f"127.0.0.1:5000/app@sha256:{n:064x}" for n in range(6)},
               "a/bare": {"1.0.0": "bare", "2.0.0": "bare:2"}}
    keep = images_to_keep(history, 1, in_use=(), protected={"a/app": ["1.1.0", "1.0.0", "9.9.9"],
                                                            "a/gone": ["1.0.0"]})
    assert keep == {f"127.0.0.1:5000/app@sha256:{n:064x}" for n in (5, 1, 0)} | {"bare:2"}
    # a bare name is listed by Docker as NAME:latest
    assert "bare:latest" in images_to_keep(history, 2, in_use=())


def test_images_are_matched_by_digest_reference_and_by_tag() -> None:
    images = [
        ImageInfo("sha256:old", (), 10.0, 100, {}, (PINNED,)),
        ImageInfo("sha256:tagged", ("app:1", "mine:1"), 5.0, 50, {}, ()),
        ImageInfo("sha256:used", ("app:2",), 1.0, 70, {}, ()),
        ImageInfo("sha256:kept", ("app:3",), 1.0, 70, {}, ("127.0.0.1:5000/app@sha256:kept",)),
        ImageInfo("sha256:foreign", ("debian:12",), 0.0, 70, {}, ()),
    ]
    known = {PINNED, "app:1", "app:2", "app:3"}
    items = evictable_images(images, known, keep={"127.0.0.1:5000/app@sha256:kept"},
                             in_use_ids={"sha256:used"})
    assert [(i.ref, i.refs, i.size) for i in items] == [("app:3", ("app:3",), 0),
                                                         ("app:1", ("app:1",), 50),
                                                         (PINNED, (PINNED,), 100)]
    # an image with a kept name stays; a name of it that nothing keeps goes (frees nothing)
    kept_too = [ImageInfo("sha256:two", ("app:4", "app:5"), 3.0, 90, {}, ())]
    assert [(i.ref, i.size) for i in evictable_images(kept_too, {"app:4", "app:5"},
                                                      {"app:5"}, set())] == [("app:4", 0)]
    assert all(i.kind == "image" for i in items)


_REFS = st.sampled_from([PINNED, "app:1", "app:2", "app:latest", "other:1",
                         "127.0.0.1:5000/app@sha256:" + "2" * 64])


@given(st.dictionaries(_REFS, st.sampled_from(["sha256:a", "sha256:b", "sha256:c"])),
       st.frozensets(_REFS), st.frozensets(_REFS),
       st.frozensets(st.sampled_from(["sha256:a", "sha256:b", "sha256:x"])))
def test_an_image_in_use_or_kept_is_never_evicted(
        owner: dict[str, str], known: frozenset[str], keep: frozenset[str],
        in_use: frozenset[str]) -> None:
    """``owner``: reference -> the one image it names (as in Docker)."""
    infos = [ImageInfo(image_id, tuple(sorted(r for r, o in owner.items()
                                              if o == image_id and "@" not in r)), 0.0, 1, {},
                       tuple(sorted(r for r, o in owner.items() if o == image_id and "@" in r)))
             for image_id in sorted(set(owner.values()))]
    for item in evictable_images(infos, known, keep, in_use):
        image = next(i for i in infos if i.id == owner[item.ref])
        assert image.id not in in_use
        assert item.refs and set(item.refs) <= known - keep
        assert {owner[r] for r in item.refs} == {image.id}
        if set(image.references) & keep:  # it stays, under a kept name
            assert item.size == 0


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
