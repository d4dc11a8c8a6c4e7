"""The user an instance runs as, on real Docker: uid 65532 when the image names none, the
image's named user when it names one, root only when the unit asks; the root filesystem
stays read-only and the state directory is the instance user's."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import docker
import pytest
from agent_fixtures import DEMO_IMAGE, AgentHarness, http_get, make_spec

from agent.instances.spec import StateMode
from agent.service import AgentService

ID = ("sh", "-c", "id -u; id -g")


@pytest.fixture
def nobody_image(docker_client: docker.DockerClient, demo_images: None) -> Iterator[str]:
    """The demo image with ``USER nobody`` (a name: resolved through its /etc/passwd)."""
    tag = f"landlord-test/demo-nobody:{uuid.uuid4().hex[:8]}"
    container = docker_client.api.create_container(DEMO_IMAGE)
    try:
        docker_client.api.commit(container["Id"], *tag.split(":"), changes=["USER nobody"])
    finally:
        docker_client.api.remove_container(container["Id"], force=True)
    yield tag
    docker_client.api.remove_image(tag, force=True)


async def ids(agent: AgentService, instance_id: str) -> tuple[int, int]:
    view = agent.instance(instance_id)
    result = await agent.supervisor.runtime.exec(view.container_id or "", ID, 10.0)
    assert result.exit_code == 0, result.stderr
    uid, gid = result.stdout.decode().split()
    return int(uid), int(gid)


async def test_unprivileged_by_default_with_its_state_dir(harness: AgentHarness) -> None:
    agent = await harness.agent()
    spec = make_spec("user-default", state_mode=StateMode.SNAPSHOT)
    view = await agent.start_instance(spec)
    assert view.state == "running"
    assert await ids(agent, "user-default") == (65532, 65532)
    runtime = agent.supervisor.runtime
    cid = view.container_id or ""
    denied = await runtime.exec(cid, ("sh", "-c", "touch /app/x || touch /x"), 10.0)
    assert denied.exit_code != 0 and b"Read-only file system" in denied.stderr
    wrote = await runtime.exec(cid, ("sh", "-c", 'echo hi > "$STATE_DIR/probe"'), 10.0)
    assert wrote.exit_code == 0, wrote.stderr
    # the demo server writes its counter into the state directory as that user
    status, body = http_get(spec.port, "/")
    assert status == 200, body
    state_dir = agent.supervisor.state_host_dir(spec)
    assert state_dir is not None
    info = state_dir.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (65532, 65532, 0o700)
    counter = state_dir / "counter.json"
    assert counter.stat().st_uid == 65532 and json.loads(counter.read_text())
    assert (state_dir / "probe").read_text() == "hi\n"


async def test_image_user_and_explicit_root(harness: AgentHarness, nobody_image: str) -> None:
    agent = await harness.agent()
    await agent.start_instance(make_spec("user-image", image=nobody_image,
                                         state_mode=StateMode.SNAPSHOT))
    await agent.start_instance(make_spec("user-root", run_as_root=True,
                                         state_mode=StateMode.SNAPSHOT))
    assert await ids(agent, "user-image") == (65534, 65534)  # Debian's nobody:nogroup
    assert await ids(agent, "user-root") == (0, 0)
    dirs = {i: agent.supervisor.state_host_dir(agent.records.get(i).spec)
            for i in ("user-image", "user-root")}
    owners = {i: (os.stat(d).st_uid if d else None) for i, d in dirs.items()}
    assert owners == {"user-image": 65534, "user-root": 0}
    root = agent.instance("user-root")
    denied = await agent.supervisor.runtime.exec(root.container_id or "", ("touch", "/x"), 10.0)
    assert denied.exit_code != 0  # root too keeps the read-only root filesystem
