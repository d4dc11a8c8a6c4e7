"""Restart safety: an agent killed with SIGKILL leaves its containers running, and the
next agent (the real ``landlord-agent`` daemon) adopts them without restarting any."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import docker
from agent_fixtures import HOST_ADDRESS, REPO, TEST_LABEL, AgentHarness, free_port, http_get

from tests.support import async_eventually

# an agent process that starts one instance, then supervises until killed
FIRST_AGENT = """
import asyncio, json, os, sys
from agent.config import load_config
from agent.runtime.docker_runtime import DockerRuntime
from agent.service import AgentService
from agent.instances.spec import InstanceSpec

async def main():
    service = AgentService(load_config(None, os.environ), DockerRuntime())
    await service.open()
    view = await service.start_instance(InstanceSpec.from_dict(json.loads(sys.argv[1])))
    print("started", view.state, view.container_id, flush=True)
    await service.run(asyncio.Event())

asyncio.run(main())
"""


def _env(data_dir: Path, host_id: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDLORD_AGENT_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "LANDLORD_AGENT_HOST_ID": host_id,
            "LANDLORD_AGENT_DATA_DIR": str(data_dir),
            "LANDLORD_AGENT_RUN_DIR": str(data_dir / "run"),
            "LANDLORD_AGENT_ADVERTISE_ADDRESS": HOST_ADDRESS,
            "LANDLORD_AGENT_LABELS": TEST_LABEL,
            "LANDLORD_AGENT_BANDWIDTH": "false",
            # This test is about containers; HAProxy (which outlives the agent by
            # design) is exercised by the data-plane and e2e tests.
            "LANDLORD_AGENT_DATA_PLANE": "false",
            "LANDLORD_AGENT_MONITOR_INTERVAL": "1",
        }
    )
    return env


def _started_at(client: docker.DockerClient, container_id: str) -> tuple[str, int, str]:
    state = client.api.inspect_container(container_id)
    return state["State"]["StartedAt"], state["RestartCount"], state["State"]["Status"]


async def test_agent_killed_and_restarted_adopts_without_restarting(
    harness: AgentHarness, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    host_id = harness.config().host_id  # registers the host for container cleanup
    data_dir = tmp_path / "agent-data"
    env = _env(data_dir, host_id)
    port = free_port()
    spec = {
        "apartment": "test",
        "unit": "demo",
        "version": "1.0.0",
        "slot": "green",
        "instance_id": "adopt-1",
        "image": "landlord/demo-app:1.0.0",
        "port": port,
        "state_mode": "snapshot",
        "health": {"interval": 0.5},
    }
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FIRST_AGENT,
        json.dumps(spec),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert first.stdout is not None
    line = (await asyncio.wait_for(first.stdout.readline(), 60)).decode().split()
    assert line[:2] == ["started", "running"], line
    container_id = line[2]
    assert http_get(port, "/")[0] == 200
    before = _started_at(docker_client, container_id)

    first.send_signal(signal.SIGKILL)
    await first.wait()
    assert _started_at(docker_client, container_id) == before  # still up, untouched
    assert http_get(port, "/")[0] == 200

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify.sock"
    notify.bind(str(notify_path))
    notify.setblocking(False)
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.main",
        "--watchdog-interval",
        "0.5",
        env={**env, "NOTIFY_SOCKET": str(notify_path)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    messages: list[str] = []
    try:
        loop = asyncio.get_running_loop()

        async def got(word: str) -> bool:
            messages.append((await asyncio.wait_for(loop.sock_recv(notify, 4096), 5)).decode())
            return any(word in m for m in messages)

        await async_eventually(lambda: got("READY=1"), timeout=60)
        await async_eventually(lambda: got("WATCHDOG=1"), timeout=10)
        assert daemon.stderr is not None
        logs = []
        while True:
            raw = await asyncio.wait_for(daemon.stderr.readline(), 30)
            logs.append(json.loads(raw))
            if logs[-1]["message"].startswith("agent ") and "adopted" in logs[-1]:
                break
        assert logs[-1]["adopted"] == ["adopt-1"] and logs[-1]["recovered"] == []
        assert _started_at(docker_client, container_id) == before  # nothing restarted
        record = json.loads((data_dir / "instances" / "adopt-1.json").read_text())
        assert record["container_id"] == container_id
        assert record["lifecycle"]["state"] == "running" and record["generation"] == 1
        assert http_get(port, "/")[0] == 200

        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0
        await async_eventually(lambda: got("STOPPING=1"), timeout=5)
        assert _started_at(docker_client, container_id) == before  # SIGTERM kept it too
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
        notify.close()
