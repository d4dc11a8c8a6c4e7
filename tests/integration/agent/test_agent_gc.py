"""Garbage collection on real Docker: idle instances, memory, disk cache."""

from __future__ import annotations

import asyncio
import json
import os
import tarfile
import time
from pathlib import Path

import docker
from agent_fixtures import DEMO_IMAGE, AgentHarness, http_get, make_spec, wait_event

from agent.instances.events import EventType
from agent.instances.spec import ResourceSpec, StateMode
from tests.support import async_eventually

MIB = 1024 * 1024


async def test_idle_instance_is_collected_with_its_state_backed_up(
    harness: AgentHarness, docker_client: docker.DockerClient
) -> None:
    agent = await harness.agent(backup_retention=2)
    agent.set_stable_version("test", "demo", "1.0.0")
    stable = make_spec("stable-1", idle_timeout=0.5, state_mode=StateMode.SNAPSHOT)
    idle = make_spec(
        "idle-1",
        version="1.1.0",
        image="landlord/demo-app:1.1.0",
        idle_timeout=1.0,
        state_mode=StateMode.SNAPSHOT,
    )
    busy = make_spec("busy-1", version="1.1.0", image="landlord/demo-app:1.1.0", idle_timeout=1.0)
    views = {s.instance_id: await agent.start_instance(s) for s in (stable, idle, busy)}
    for _ in range(2):
        assert http_get(idle.port, "/")[0] == 200
    record_file = agent.store.directory / "idle-1.json"
    assert record_file.exists()

    async def collected() -> bool:
        agent.record_request("busy-1")  # the data plane keeps seeing requests for busy-1
        result = await agent.run_gc("unused")
        return "idle-1" in result["collected"]

    await async_eventually(collected, timeout=30, interval=0.3)
    event = await wait_event(agent, EventType.GC_COLLECTED)
    assert event.instance == "idle-1" and "idle for" in event.details["reason"]
    backup = Path(event.details["backup"])
    with tarfile.open(backup) as archive:
        counter = archive.extractfile("state/counter.json")
        assert counter is not None and json.loads(counter.read())["count"] == 2
    assert {v.instance_id for v in agent.instances()} == {"stable-1", "busy-1"}
    assert not record_file.exists()
    assert not docker_client.containers.list(all=True, filters={"id": views["idle-1"].container_id})
    history = [e.details["to"] for e in agent.bus.recent(EventType.STATE) if e.instance == "idle-1"]
    assert history[-2:] == ["stopping", "stopped"]
    # the stable version is never collected, however idle
    await asyncio.sleep(0.6)
    assert "stable-1" not in (await agent.run_gc("unused"))["collected"]


async def test_memory_optimization_drops_page_cache_of_idle_instances(
    harness: AgentHarness,
) -> None:
    agent = await harness.agent(memory_reclaim_idle=0.0)
    writer = 'dd if=/dev/zero of="$STATE_DIR/blob" bs=1M count=64 && exec python3 /app/app.py'
    spec = make_spec(
        "cache-1",
        command=("sh", "-c", writer),
        state_mode=StateMode.SNAPSHOT,
        resources=ResourceSpec(cpu=1.0, memory=256 * MIB),
    )
    await agent.start_instance(spec)
    result = await agent.run_gc("memory")
    [freed] = [r for r in result["reclaimed"] if r["instance"] == "cache-1"]
    print(
        f"page cache {freed['cache_before'] / MIB:.1f} MiB -> {freed['cache_after'] / MIB:.1f}"
        f" MiB via {freed['how']}"
    )
    assert freed["cache_before"] > 48 * MIB
    assert freed["cache_after"] < freed["cache_before"] / 4
    assert freed["how"] == "memory.force_empty" and freed["why"] == "idle"
    await wait_event(agent, EventType.GC_MEMORY)


async def test_cache_eviction_keeps_latest_versions_and_follows_watermarks(
    harness: AgentHarness, docker_client: docker.DockerClient
) -> None:
    agent = await harness.agent(stopped_container_max_age=0.0, dump_max_age=3600.0)
    host = agent.config.host_id
    repo = f"landlord/gc-test-{host}"
    versions = ["1.0.0", "1.1.0", "1.2.0", "2.0.0", "2.1.0"]
    image = docker_client.images.get(DEMO_IMAGE)
    try:
        for version in versions:
            image.tag(repo, version)
            agent.gc.remember(make_spec("x", version=version, image=f"{repo}:{version}"))
        stopped = docker_client.containers.create(
            DEMO_IMAGE, labels={"landlord.host": host, "landlord.test": "1"}
        )
        old_dump = agent.config.data_dir / "dumps" / "gone-1" / "20200101T000000-crash-g1"
        old_dump.mkdir(parents=True)
        (old_dump / "crash.json").write_text("{}")
        os.utime(old_dump, (time.time() - 7200, time.time() - 7200))
        fresh_dump = agent.config.data_dir / "dumps" / "gone-1" / "29990101T000000-crash-g2"
        fresh_dump.mkdir()

        # below the high watermark: only what is past its age goes
        agent.gc.disk_usage = lambda: (50, 100)
        removed = (await agent.run_gc("cache"))["evicted"]
        assert {(r["kind"], r["ref"]) for r in removed} == {
            ("container", stopped.id),
            ("dump", str(old_dump)),
        }
        assert fresh_dump.exists()
        assert len(docker_client.images.get(DEMO_IMAGE).tags) >= len(versions) + 1

        # above it: names of images outside the 3 latest versions, until the low watermark
        size = image.attrs["Size"]
        total = 12 * size
        agent.gc.disk_usage = lambda: (int(0.9 * total), total)
        removed = (await agent.run_gc("cache"))["evicted"]
        assert sorted(r["ref"] for r in removed if r["kind"] == "image") == [
            f"{repo}:1.0.0",
            f"{repo}:1.1.0",
        ]
        tags = set(docker_client.images.get(DEMO_IMAGE).tags)
        assert {f"{repo}:1.2.0", f"{repo}:2.0.0", f"{repo}:2.1.0", DEMO_IMAGE} <= tags
        assert not {f"{repo}:1.0.0", f"{repo}:1.1.0"} & tags
        # the versions' tags all name one image, which stays under the kept ones: dropping
        # the old names frees no disk, so the eviction went on to the only other candidate
        assert not fresh_dump.exists()
    finally:
        for tag in docker_client.images.get(DEMO_IMAGE).tags:
            if tag.startswith(repo):
                docker_client.images.remove(tag)
