"""Limits on real Docker: cgroup values, OOM kill and recovery, storage eviction, and
egress shaping on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import docker
from agent_fixtures import (
    HOST_ADDRESS,
    AgentHarness,
    http_get,
    make_spec,
    sh,
    wait_event,
)

from agent.instances.events import EventType
from agent.instances.spec import HealthSpec, ResourceSpec
from agent.limits.bandwidth import HOST_INGRESS
from common.lifecycle import InstanceState
from common.network_modes import NetworkMode
from tests.support import async_eventually

MIB = 1024 * 1024
CGROUP = Path("/sys/fs/cgroup")


def _cgroup(controller: str, container_id: str, name: str) -> str:
    return (CGROUP / controller / "docker" / container_id / name).read_text().strip()


async def test_limits_are_visible_in_the_container_cgroup(
    harness: AgentHarness, docker_client: docker.DockerClient
) -> None:
    agent = await harness.agent()
    spec = make_spec("limits-1", resources=ResourceSpec(cpu=0.5, memory=96 * MIB, pids=64))
    view = await agent.start_instance(spec)
    assert view.state == "running"
    cid = view.container_id
    assert cid is not None
    assert int(_cgroup("memory", cid, "memory.limit_in_bytes")) == 96 * MIB
    assert int(_cgroup("memory", cid, "memory.memsw.limit_in_bytes")) == 96 * MIB  # swap off
    quota = int(_cgroup("cpu", cid, "cpu.cfs_quota_us"))
    period = int(_cgroup("cpu", cid, "cpu.cfs_period_us"))
    assert quota / period == 0.5
    assert _cgroup("pids", cid, "pids.max") == "64"

    attrs = docker_client.api.inspect_container(cid)
    host_config = attrs["HostConfig"]
    assert host_config["NetworkMode"] == "landlord"  # bridged by default (bridge_network)
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["Init"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host_config["SecurityOpt"]
    assert host_config["RestartPolicy"]["Name"] in ("no", "")
    assert host_config["AutoRemove"] is False
    labels = attrs["Config"]["Labels"]
    assert labels["landlord.unit"] == "demo" and labels["landlord.slot"] == "blue"
    assert labels["landlord.instance"] == "limits-1" and labels["landlord.version"] == "1.0.0"
    assert labels["landlord.host"] == agent.config.host_id
    assert labels["landlord.apartment"] == "test"
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["BIND"] == "0.0.0.0" and env["PORT"] == str(spec.port)  # in its namespace
    assert host_config["PortBindings"] == {
        f"{spec.port}/tcp": [{"HostIp": HOST_ADDRESS, "HostPort": str(spec.port)}]}
    status, body = http_get(spec.port, "/healthz")
    assert status == 200 and json.loads(body)["version"] == "1.0.0"

    # the monitor reads the same limits back from the cgroup files
    await agent.monitor.sample_once()
    figures = agent.stats("limits-1")
    assert figures["memory_limit"] == 96 * MIB
    assert 0 < figures["memory_usage"] < 96 * MIB and figures["pids"] >= 2
    assert "cgroup" in view.enforcement["memory"] and "evicted" in view.enforcement["storage"]


async def test_memory_hog_is_oom_killed_dumped_and_recovered(harness: AgentHarness) -> None:
    agent = await harness.agent()
    spec = make_spec(
        "oom-1", env={"LEAK_MB_PER_MIN": "1500"}, resources=ResourceSpec(cpu=1.0, memory=48 * MIB)
    )
    await agent.start_instance(spec)
    dump = await wait_event(agent, EventType.CRASH_DUMP, lambda e: e.details["oom_killed"])
    crash = json.loads((Path(dump.details["path"]) / "crash.json").read_text())
    assert crash["oom_killed"] is True and crash["exit_code"] == 137
    inspect = json.loads((Path(dump.details["path"]) / "inspect.json").read_text())
    assert inspect["State"]["OOMKilled"] is True
    exceeded = await wait_event(
        agent, EventType.LIMIT_EXCEEDED, lambda e: e.details["resource"] == "memory"
    )
    assert exceeded.details["limit"] == 48 * MIB
    success = await wait_event(agent, EventType.RECOVERY_SUCCESS)
    assert success.details["generation"] >= 2
    await wait_event(agent, EventType.TRAFFIC_SWITCH)


async def test_storage_hog_is_evicted_with_the_reason(
    harness: AgentHarness, docker_client: docker.DockerClient
) -> None:
    agent = await harness.agent(run_loops=True)
    # /tmp: the instance runs unprivileged (uid 65532) and may not write to /
    hog = "python3 /app/app.py & sleep 2; dd if=/dev/zero of=/tmp/hog bs=1M count=40; wait"
    spec = make_spec(
        "hog-1",
        command=("sh", "-c", hog),
        read_only_rootfs=False,
        resources=ResourceSpec(cpu=1.0, memory=128 * MIB, storage=20 * MIB),
    )
    view = await agent.start_instance(spec)
    evicted = await wait_event(agent, EventType.EVICTED, timeout=60)
    assert "storage limit exceeded" in evicted.details["reason"]
    assert evicted.details["usage"] > 20 * MIB
    exceeded = await wait_event(
        agent, EventType.LIMIT_EXCEEDED, lambda e: e.details["resource"] == "storage"
    )
    assert exceeded.details["action"] == "evicted"
    after = agent.instance("hog-1")
    assert after.state == InstanceState.STOPPED
    assert "storage limit exceeded" in after.metadata["evicted"]
    with contextlib.suppress(docker.errors.NotFound):  # the writable layer is gone
        docker_client.api.inspect_container(view.container_id)
        raise AssertionError("evicted container still exists")


SENDER = (  # one line: env values may not hold a newline (common/input_bounds.py)
    "import os, socket, time; "
    "sock = socket.create_connection((os.environ['BIND'], int(os.environ['SINK_PORT']))); "
    "chunk = b'x' * 65536; end = time.time() + 60; "
    "[sock.sendall(chunk) for _ in iter(lambda: time.time() < end, False)]")


class Sink:
    """Accepts one connection on the host address and counts what arrives."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind((HOST_ADDRESS, 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.received = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.server.settimeout(60)
        try:
            conn, _ = self.server.accept()
        except OSError:  # closed, or nobody came: the test says what it missed
            return
        conn.settimeout(5)
        with conn:
            while not self.done.is_set():
                data = conn.recv(1 << 16)
                if not data:
                    break
                self.received += len(data)

    def close(self) -> None:
        self.done.set()
        self.server.close()
        self.thread.join(10)


async def test_egress_bandwidth_is_shaped_on_loopback(harness: AgentHarness) -> None:
    run_dir = Path(f"/run/landlord-agent-test-{time.monotonic_ns()}")
    agent = await harness.agent(bandwidth=True, egress_device="lo", run_dir=run_dir)
    sink = Sink()
    rate = 8_000_000
    try:
        command = ("sh", "-c", 'python3 /app/app.py & exec python3 -c "$SENDER"')
        spec = make_spec(
            "bw-1",
            network_mode=NetworkMode.HOST,  # the net_cls path; bridged: test_agent_bridged.py
            command=command,
            env={"SENDER": SENDER, "SINK_PORT": str(sink.port)},
            resources=ResourceSpec(cpu=1.0, memory=128 * MIB, network=rate),
            health=HealthSpec(interval_s=0.5),
        )
        view = await agent.start_instance(spec)
        assert "bit/s egress" in view.enforcement["network"], view.enforcement
        # its ingress is not shaped, and the agent says so: in the result and as an event
        assert HOST_INGRESS in view.enforcement["network"]
        said = agent.bus.recent(EventType.LIMIT_NOT_ENFORCED)
        assert [e.details["reason"] for e in said] == [view.enforcement["network"]]
        minor = agent.records.get("bw-1").classid
        assert minor is not None
        await async_eventually(lambda: _true(sink.received > 0), timeout=20)
        await asyncio.sleep(1.0)  # past the initial burst
        start_bytes, start = sink.received, time.monotonic()
        await asyncio.sleep(3.0)
        measured = (sink.received - start_bytes) * 8 / (time.monotonic() - start)
        print(f"shaped egress: {measured / 1e6:.2f} Mbit/s (limit {rate / 1e6:g})")
        assert 0.3 * rate < measured < 1.5 * rate
        stats = await asyncio.to_thread(sh, "tc", "-s", "class", "show", "dev", "lo")
        assert f"class htb 1:{minor:x} " in stats
        assert not agent.bus.recent(EventType.CRASHED)  # saturated, yet healthy
        await agent.stop_instance("bw-1", grace=1)
        classes = await asyncio.to_thread(sh, "tc", "class", "show", "dev", "lo")
        assert f"class htb 1:{minor:x} " not in classes  # released with the instance
    finally:
        sink.close()
        await asyncio.to_thread(sh, "tc", "qdisc", "del", "dev", "lo", "root")
        await asyncio.to_thread(sh, "umount", str(run_dir / "bpf"))
        await asyncio.to_thread(sh, "rm", "-rf", str(run_dir))


async def _true(value: bool) -> bool:
    return value
