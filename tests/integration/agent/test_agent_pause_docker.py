"""Pause and resume on real Docker: a paused instance's process does not run (a request gets
no answer), health checks and recovery leave it alone, and resume continues the same process
(same PID, same start time, its in-memory counter where it was). An agent restarted while an
instance is paused finds it paused and keeps it so."""

from __future__ import annotations

import asyncio
import json
import socket

import docker
import pytest
from agent_fixtures import AgentHarness, free_port, http_get, make_spec

from common.errors import FailedPrecondition
from common.lifecycle import InstanceState

ADDRESS = "127.0.0.151"
pytestmark = pytest.mark.timeout(120)


def _count(port: int) -> int:
    """The demo app's in-memory request counter (GET /state does not count itself)."""
    status, body = http_get(port, "/state", address=ADDRESS)
    assert status == 200, body
    return int(json.loads(body)["count"])


def _frozen(port: int) -> bool:
    """True when a request gets no answer within a second (the process does not run)."""
    with socket.create_connection((ADDRESS, port), timeout=1.0) as sock:
        sock.sendall(b"GET /state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            return not sock.recv(1)
        except TimeoutError:
            return True


def _process(client: docker.DockerClient, container_id: str) -> tuple[str, int, str]:
    state = client.api.inspect_container(container_id)["State"]
    return state["Status"], state["Pid"], state["StartedAt"]


async def test_pause_freezes_and_resume_continues_the_same_process(
        harness: AgentHarness, docker_client: docker.DockerClient) -> None:
    agent = await harness.agent(run_loops=True, advertise_address=ADDRESS)
    port = free_port(ADDRESS)
    view = await agent.start_instance(make_spec("pz-int-1", port))  # probes every 0.5 s
    assert view.state == InstanceState.RUNNING.value
    for _ in range(3):
        assert http_get(port, address=ADDRESS)[0] == 200
    before = _count(port)
    assert before == 3
    container = view.container_id
    assert container is not None
    status, pid, started = await asyncio.to_thread(_process, docker_client, container)
    assert status == "running"

    assert await agent.pause_instance("pz-int-1") is True
    assert await agent.pause_instance("pz-int-1") is False  # already paused: nothing to do
    assert agent.instance("pz-int-1").state == InstanceState.PAUSED.value
    assert (await asyncio.to_thread(_process, docker_client, container))[0] == "paused"
    assert await asyncio.to_thread(_frozen, port)
    # several health intervals (0.5 s, two failures make unhealthy): nothing probes, nothing
    # recovers, the record stays paused with the same container
    await asyncio.sleep(3.0)
    history = [t.to_dict() for t in agent.records.get("pz-int-1").lifecycle.history]
    assert agent.instance("pz-int-1").state == InstanceState.PAUSED.value, history
    assert not agent.bus.recent("recovery.attempt")
    assert agent.instance("pz-int-1").container_id == container

    assert await agent.resume_instance("pz-int-1") is True
    assert await agent.resume_instance("pz-int-1") is False  # not paused: nothing to do
    assert agent.instance("pz-int-1").state == InstanceState.RUNNING.value
    assert await asyncio.to_thread(_process, docker_client, container) == (
        "running", pid, started)
    # the request sent while frozen was answered after the thaw (it never counted: /state)
    assert _count(port) == before
    assert http_get(port, address=ADDRESS)[0] == 200
    assert _count(port) == before + 1  # the in-memory counter went on where it was
    await asyncio.sleep(2.0)  # health checks run again and pass
    assert agent.instance("pz-int-1").state == InstanceState.RUNNING.value
    assert not agent.bus.recent("recovery.attempt")


async def test_only_a_running_instance_is_paused_and_a_restarted_agent_keeps_it_paused(
        harness: AgentHarness, docker_client: docker.DockerClient) -> None:
    config = harness.config(advertise_address=ADDRESS)
    agent = await harness.agent(host_id=config.host_id, advertise_address=ADDRESS)
    port = free_port(ADDRESS)
    view = await agent.start_instance(make_spec("pz-int-2", port))
    assert http_get(port, address=ADDRESS)[0] == 200
    container = view.container_id
    assert container is not None
    _, pid, started = await asyncio.to_thread(_process, docker_client, container)
    assert await agent.pause_instance("pz-int-2")
    await agent.close()  # the agent goes; the frozen container stays

    again = await harness.agent(host_id=config.host_id, advertise_address=ADDRESS)
    assert again.instance("pz-int-2").state == InstanceState.PAUSED.value
    assert await asyncio.to_thread(_process, docker_client, container) == (
        "paused", pid, started)
    await asyncio.sleep(2.0)  # adoption started no health watch on it
    assert again.instance("pz-int-2").state == InstanceState.PAUSED.value
    assert await again.resume_instance("pz-int-2")
    assert await asyncio.to_thread(_process, docker_client, container) == (
        "running", pid, started)
    assert _count(port) == 1  # one request before the pause, kept across the restart

    assert await again.pause_instance("pz-int-2")
    await again.stop_instance("pz-int-2", grace=2.0)  # a paused instance stops (thawed first)
    assert not docker_client.api.containers(all=True, filters={"id": container})
    with pytest.raises(FailedPrecondition, match="only a running instance can be paused"):
        starting = await again.start_instance(make_spec("pz-int-3", free_port(ADDRESS)),
                                              wait=False)
        await again.pause_instance(starting.instance_id)
