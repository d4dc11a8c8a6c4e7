"""The agent pulls a version's image from a real registry (Debian's docker-registry on a
free loopback port) by digest before it starts the first instance, with credentials from
registry_auth_file when the registry wants them.

Each test pushes an image of its own (the demo image plus one random layer) and removes it
from local Docker, so the pull really downloads that layer.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from agent_fixtures import DEMO_IMAGE, AgentHarness, free_port, make_spec, wait_event

from agent.instances.events import EventType
from common.errors import LandlordError
from tests.support.registry import LocalRegistry, throwaway_registry, unique_image


def pushed_away(registry: LocalRegistry) -> str:
    """Push a fresh image to ``registry``, remove it locally; its pinned reference."""
    tag = f"landlord-test/pull-probe:{uuid.uuid4().hex[:10]}"
    unique_image(DEMO_IMAGE, tag)
    reference = f"{registry.address}/pull-probe@{registry.push(tag, 'pull-probe', '1.0.0')}"
    registry.forget_locally(reference)
    client = docker.from_env()
    try:
        client.images.remove(tag)
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(reference)
    finally:
        client.close()
    return reference


@pytest.fixture
def registry(demo_images: None) -> Iterator[LocalRegistry]:
    with throwaway_registry() as server:
        yield server


@pytest.fixture
def private_registry(demo_images: None) -> Iterator[LocalRegistry]:
    with throwaway_registry(users={"landlord": "s3cret-pw"}) as server:
        yield server


async def test_a_missing_image_is_pulled_by_digest_once_and_the_instances_start(
        registry: LocalRegistry, harness: AgentHarness) -> None:
    reference = pushed_away(registry)
    agent = await harness.agent()
    specs = [make_spec(f"pull-{n}-{uuid.uuid4().hex[:6]}", image=reference) for n in (1, 2)]
    views = await asyncio.gather(*(agent.start_instance(s) for s in specs))
    assert [v.state for v in views] == ["running", "running"]

    assert len(agent.bus.recent(EventType.IMAGE_PULL_STARTED)) == 1  # one pull for both
    pulled = await wait_event(agent, EventType.IMAGE_PULLED)
    assert pulled.details["image"] == reference and pulled.details["registry"] == \
        registry.address
    assert pulled.details["size"] > 100_000_000  # the whole image, base layers included
    assert pulled.details["downloaded"] >= 256 * 1024  # the layer only the registry had
    progress = agent.bus.recent(EventType.IMAGE_PULL_PROGRESS)
    assert progress and progress[-1].details["bytes_done"] == progress[-1].details[
        "bytes_total"]
    client = docker.from_env()
    try:
        image = client.images.get(reference)
        assert reference in image.attrs["RepoDigests"]
        container = client.containers.get(views[0].container_id or "")
        assert container.attrs["Config"]["Image"] == reference
    finally:
        client.close()


async def test_a_registry_that_wants_credentials_gets_them_from_the_auth_file(
        private_registry: LocalRegistry, harness: AgentHarness, tmp_path: Path) -> None:
    reference = pushed_away(private_registry)

    anonymous = await harness.agent()
    spec = make_spec(f"anon-{uuid.uuid4().hex[:6]}", image=reference)
    with pytest.raises(LandlordError) as refused:
        await anonymous.start_instance(spec)
    assert "no basic auth credentials" in str(refused.value) or \
        "unauthorized" in str(refused.value)
    failed = await wait_event(anonymous, EventType.IMAGE_PULL_FAILED)
    assert failed.details["reason"] == str(refused.value)
    assert anonymous.instance(spec.instance_id).state == "error"

    auth_file = private_registry.auth_file(tmp_path / "registries.json")
    trusted = await harness.agent(registry_auth_file=str(auth_file))
    view = await trusted.start_instance(make_spec(f"auth-{uuid.uuid4().hex[:6]}",
                                                  port=free_port(), image=reference))
    assert view.state == "running"
    await wait_event(trusted, EventType.IMAGE_PULLED)


async def test_gc_keeps_protected_versions_pulled_by_digest_and_drops_the_others(
        registry: LocalRegistry, harness: AgentHarness) -> None:
    references = [pushed_away(registry) for _ in range(3)]
    agent = await harness.agent(keep_versions=1)
    for n, reference in enumerate(references):
        spec = make_spec(f"gc-{n}-{uuid.uuid4().hex[:6]}", version=f"1.{n}.0", image=reference)
        await agent.start_instance(spec)
        await agent.stop_instance(spec.instance_id)
    # 1.2.0 is the latest; the coordinator protects 1.0.0 (say, the previous stable)
    agent.gc.protect("test", "demo", ("1.0.0",))
    agent.gc.disk_usage = lambda: (99, 100)
    removed = (await agent.run_gc("cache"))["evicted"]
    assert [r["ref"] for r in removed if r["kind"] == "image"] == [references[1]]
    client = docker.from_env()
    try:
        for kept in (references[0], references[2]):
            assert kept in client.images.get(kept).attrs["RepoDigests"]
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(references[1])
    finally:
        client.close()


async def test_a_pull_from_a_registry_that_never_answers_ends_at_the_pull_timeout(
        harness: AgentHarness) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does) and never says a word
    try:
        reference = f"127.0.0.1:{silent.getsockname()[1]}/silent@sha256:{'c' * 64}"
        agent = await harness.agent(image_pull_timeout=2.0)
        started = time.monotonic()
        with pytest.raises(LandlordError, match="did not finish within 2 s"):
            await agent.start_instance(make_spec(f"silent-{uuid.uuid4().hex[:6]}",
                                                 image=reference))
        assert time.monotonic() - started < 10
        failed = await wait_event(agent, EventType.IMAGE_PULL_FAILED)
        assert "did not finish" in failed.details["reason"]
    finally:
        silent.close()
