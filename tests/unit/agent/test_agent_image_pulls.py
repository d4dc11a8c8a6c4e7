"""Image pulls before a start: one pull per reference, credentials, events, failures; and
the pure progress throttle."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.instances.events import EventType
from agent.instances.image_pulls import PullProgress
from agent.runtime.protocol import PullStatus
from common.errors import NotFound, Unavailable
from common.lifecycle import InstanceState
from tests.unit.agent.fake_runtime import RecordingRuntime
from tests.unit.agent.test_agent_supervisor import make_rig, spec

REF = "127.0.0.1:5999/demo-app@sha256:" + "ab" * 32


async def test_a_missing_registry_image_is_pulled_once_for_instances_starting_together(
        tmp_path: Path) -> None:
    runtime = RecordingRuntime(missing_images={REF}, pull_gate=asyncio.Event(), pull_lines=[
        PullStatus("l1", "Pulling fs layer"), PullStatus("l1", "Downloading", 500, 1000),
        PullStatus("l2", "Already exists"), PullStatus("l1", "Download complete"),
        PullStatus("l1", "Pull complete")])
    rig = await make_rig(tmp_path, runtime)
    try:
        rig.healthy.update({20001, 20002})
        starts = [asyncio.create_task(rig.service.start_instance(spec(f"i{n}", 20000 + n,
                                                                      image=REF)))
                  for n in (1, 2)]
        await rig.wait(EventType.IMAGE_PULL_STARTED)
        assert rig.service.instance("i1").state == "created"  # reported while it pulls
        assert runtime.pull_gate is not None
        runtime.pull_gate.set()
        views = await asyncio.gather(*starts)
        assert [v.state for v in views] == ["running", "running"]
        assert [args[0] for args in runtime.by_call("pull")] == [REF]
        [pulled] = rig.service.bus.recent(EventType.IMAGE_PULLED)
        assert pulled.details["image"] == REF and pulled.details["size"] == 1000
        assert pulled.details["downloaded"] == 1000 and pulled.details["seconds"] >= 0
        progress = rig.service.bus.recent(EventType.IMAGE_PULL_PROGRESS)
        assert [(e.details["bytes_done"], e.details["bytes_total"]) for e in progress] == [
            (500, 1000), (1000, 1000)]
        launched = [r for r in runtime.by_call("create") if r.name.endswith("-g1")]
        assert len(launched) == 2  # (and a spare each, -g2)
        # present now: a later start pulls nothing
        rig.healthy.add(20003)
        await rig.service.start_instance(spec("i3", 20003, image=REF))
        assert len(runtime.by_call("pull")) == 1
    finally:
        await rig.service.close()


async def test_a_failed_pull_fails_the_start_with_the_registry_error(tmp_path: Path) -> None:
    runtime = RecordingRuntime(missing_images={REF}, pull_error="dial tcp 127.0.0.1:5999: "
                               "connect: connection refused")
    rig = await make_rig(tmp_path, runtime)
    try:
        with pytest.raises(Unavailable, match="connection refused"):
            await rig.service.start_instance(spec(image=REF))
        assert rig.service.instance("i1").state == InstanceState.ERROR.value
        [failed] = rig.service.bus.recent(EventType.IMAGE_PULL_FAILED)
        assert "connection refused" in failed.details["reason"]
        assert failed.instance == "i1" and failed.version == "1.0.0"
        assert runtime.by_call("create") == []
        # the failure is not remembered: a later start pulls again
        runtime.pull_error = ""
        rig.healthy.add(20002)
        await rig.service.start_instance(spec("i2", 20002, image=REF))
        assert len(runtime.by_call("pull")) == 2
    finally:
        await rig.service.close()


async def test_credentials_for_the_registry_come_from_the_auth_file(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {
        "127.0.0.1:5999": {"auth": base64.b64encode(b"alice:s3cret").decode()},
        "other:5000": {"username": "bob", "password": "x"}}}))
    runtime = RecordingRuntime(missing_images={REF})
    rig = await make_rig(tmp_path, runtime, registry_auth_file=str(auth),
                         image_pull_timeout=42.0)
    try:
        rig.healthy.add(20001)
        await rig.service.start_instance(spec(image=REF))
        [(_, given_auth, timeout)] = runtime.by_call("pull")
        assert given_auth == {"username": "alice", "password": "s3cret",
                              "serveraddress": "127.0.0.1:5999"}
        assert timeout == 42.0
    finally:
        await rig.service.close()


async def test_a_missing_bare_local_name_is_never_pulled(tmp_path: Path) -> None:
    runtime = RecordingRuntime(missing_images={"landlord/demo-app:9.9.9"})
    rig = await make_rig(tmp_path, runtime)
    try:
        with pytest.raises(NotFound, match="never pulled"):
            await rig.service.start_instance(spec(image="landlord/demo-app:9.9.9"))
        assert runtime.by_call("pull") == []
    finally:
        await rig.service.close()


def test_progress_is_told_a_few_times_then_once_complete() -> None:
    progress = PullProgress(interval=5.0)
    told = [progress.observe(PullStatus("l1", "Downloading", n * 10, 1000), float(n))
            for n in range(1, 100)]
    # the first line, then one every 5 s while bytes grow
    assert [t for t in told if t] == [(10 * n, 1000) for n in (1, 6, 11, 16, 21, 26, 31, 36, 41,
                                                               46, 51, 56, 61, 66, 71, 76, 81,
                                                               86, 91, 96)]
    assert progress.observe(PullStatus("l1", "Download complete"), 100.5) == (1000, 1000)
    assert progress.observe(PullStatus("l1", "Pull complete"), 200.0) is None


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                          st.sampled_from(["Pulling fs layer", "Waiting", "Downloading",
                                           "Download complete", "Already exists",
                                           "Pull complete"]),
                          st.integers(0, 5000), st.integers(0, 5000)), max_size=60))
def test_progress_is_bounded_and_tells_the_end(
        lines: list[tuple[str, str, int, int]]) -> None:
    progress = PullProgress(interval=1.0)
    told = []
    for n, (layer, status, current, total) in enumerate(lines):
        found = progress.observe(PullStatus(layer, status, current, total), n * 0.1)
        if found is not None:
            told.append(found)
    assert all(0 <= done <= total and total > 0 for done, total in told)
    assert len(told) <= 2 + len(lines) * 0.1 / 1.0 + 1
    if progress.finished:  # the moment every layer was down was told
        assert any(done == total for done, total in told)
