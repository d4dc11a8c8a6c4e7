"""The cache GC on images: versions the coordinator protects (stable, previous stable) stay
past the latest ones kept, images are found by digest reference, and the protection
survives an agent restart."""

from __future__ import annotations

from pathlib import Path

from agent.runtime.protocol import ImageInfo
from tests.unit.agent.fake_runtime import RecordingRuntime
from tests.unit.agent.test_agent_supervisor import make_rig, spec

REGISTRY = "127.0.0.1:5999/app"


def pinned(n: int) -> str:
    return f"{REGISTRY}@sha256:{n:064x}"


async def test_protected_versions_outlive_the_latest_kept_and_digests_are_matched(
        tmp_path: Path) -> None:
    runtime = RecordingRuntime(image_list=[
        ImageInfo(f"sha256:{n}", (), float(n), 100, {}, (pinned(n),)) for n in range(5)])
    rig = await make_rig(tmp_path, runtime, keep_versions=1, disk_high_watermark=0.5,
                         disk_low_watermark=0.1)
    gc = rig.service.gc
    gc.disk_usage = lambda: (990, 1000)
    try:
        for n in range(5):
            gc.remember(spec(f"i{n}", version=f"1.{n}.0", image=pinned(n)))
        gc.protect("a", "u", ("1.1.0", "1.0.0"))
        evicted = await gc.evict_cache()
        assert sorted(i.ref for i in evicted) == [pinned(2), pinned(3)]
        assert sorted(runtime.by_call("remove_image")) == [pinned(2), pinned(3)]
    finally:
        await rig.service.close()
    # a restarted agent still knows what the coordinator protected
    again = await make_rig(tmp_path, RecordingRuntime(image_list=list(runtime.image_list)),
                           keep_versions=1)
    try:
        assert again.service.gc.protected == {"a/u": ["1.0.0", "1.1.0"]}
        again.service.gc.protect("a", "u", ())
        assert again.service.gc.protected == {}
    finally:
        await again.service.close()
