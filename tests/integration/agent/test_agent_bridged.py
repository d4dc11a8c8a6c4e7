"""Bridged instances on real Docker: their own network namespace on the agent's bridge,
cut off from the host's control plane, reachable through HAProxy at the advertise address,
and held to their bandwidth limit both ways on their veth (real transfers measured)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
from agent_fixtures import HOST_ADDRESS, AgentHarness, free_port, http_get, make_spec, sh
from local_cluster.images import ensure_demo_images

from agent.dataplane import DataPlane, DataPlaneSettings
from agent.instances.spec import HealthSpec, ResourceSpec
from agent.limits.bandwidth import EgressShaper
from agent.limits.veth_shaping import ifb_name, ifb_owner, owned_ifbs, remove_owned_ifbs
from agent.service import AgentService
from common.event_types import EventType
from common.network_modes import NetworkMode
from tests.support import async_eventually
from tests.support.transfer_rates import download_rate, upload_rate

MIB = 1024 * 1024
NETWORK, SUBNET, BRIDGE = "landlord-itest", "198.18.250.0/24", "llitest0"
GATEWAY = "198.18.250.1"
ETCD = ("127.0.0.1", 2379)
PROBE = (  # try each target (connect or bind), print what happened to each
    "import json, os, socket\n"
    "def go(kind, host, port):\n"
    "    s = socket.socket(); s.settimeout(2)\n"
    "    try:\n"
    "        s.bind((host, port)) if kind == 'bind' else s.connect((host, port))\n"
    "        return 'ok'\n"
    "    except OSError as e:\n"
    "        return type(e).__name__\n"
    "    finally:\n"
    "        s.close()\n"
    "print(json.dumps([go(*t) for t in json.loads(os.environ['TARGETS'])]))\n")


@pytest.fixture
def bridge() -> Iterator[None]:
    """The test's own bridge network (the agent creates it); removed afterwards."""
    yield
    client = docker.from_env()
    with contextlib.suppress(docker.errors.NotFound):
        client.networks.get(NETWORK).remove()
    client.close()


@pytest.fixture
async def listeners() -> AsyncIterator[list[tuple[str, int]]]:
    """Stand-ins for the agent's and a coordinator's ports on loopback (the host answers)."""
    socks = []
    for address in ("127.0.0.1", HOST_ADDRESS):
        sock = socket.socket()
        sock.bind((address, 0))
        sock.listen(8)
        socks.append(sock)
    yield [s.getsockname() for s in socks]
    for sock in socks:
        sock.close()


async def _agent(harness: AgentHarness, **overrides: object) -> AgentService:
    service: AgentService = await harness.agent(bridge_network=NETWORK, bridge_subnet=SUBNET,
                               bridge_interface=BRIDGE, **overrides)
    return service


async def _probe(container_id: str, targets: list[tuple[str, str, int]]) -> list[str]:
    argv = ["docker", "exec", "-e", f"TARGETS={json.dumps(targets)}", container_id,
            "python3", "-c", PROBE]
    return list(json.loads(await asyncio.to_thread(sh, *argv)))


def _host_reaches(address: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=2):
        return True
    return False


async def test_bridged_instance_cannot_reach_the_control_plane(
        bridge: None, harness: AgentHarness, listeners: list[tuple[str, int]]) -> None:
    agent = await _agent(harness)
    other_port = free_port()
    other = await agent.start_instance(make_spec("host-1", port=other_port,
                                                 network_mode=NetworkMode.HOST))
    view = await agent.start_instance(make_spec("br-1", network_mode=NetworkMode.BRIDGE))
    assert http_get(view.port)[0] == 200  # published on the advertise address
    control = [ETCD, *listeners]
    assert all(_host_reaches(a) for a in control)  # the host itself reaches all of them
    targets = [("connect", *a) for a in control]
    targets += [("connect", GATEWAY, a[1]) for a in control]  # the host, via the bridge
    targets += [("connect", HOST_ADDRESS, other_port)]
    assert view.container_id is not None and other.container_id is not None
    answers = await _probe(view.container_id, targets)
    assert "ok" not in answers, dict(zip(map(str, targets), answers, strict=True))
    # binding the other instance's address and port succeeds only in its own namespace:
    # the host's port stays the other instance's
    await _probe(view.container_id, [("bind", HOST_ADDRESS, other_port)])
    # the same probe from a host-network instance does connect: the test can fail
    host_answers = await _probe(other.container_id, [("connect", *ETCD)])
    assert host_answers == ["ok"]
    assert http_get(other_port)[0] == 200  # the other instance's port is still its own
    netns = await asyncio.to_thread(sh, "docker", "inspect", "-f",
                                    "{{.HostConfig.NetworkMode}}", view.container_id)
    assert netns.strip() == NETWORK


async def test_bridged_instance_serves_through_haproxy(
        bridge: None, harness: AgentHarness, tmp_path: Path) -> None:
    agent = await _agent(harness)
    view = await agent.start_instance(make_spec("br-2", network_mode=NetworkMode.BRIDGE))
    plane = DataPlane(tmp_path / "plane", HOST_ADDRESS,
                      settings=DataPlaneSettings(check_inter_ms=200, check_rise=1))
    await plane.start()
    try:
        entry = free_port()
        await plane.ensure_unit("test.demo", entry)
        await plane.add_server("test.demo", "br-2", HOST_ADDRESS, view.port, "1.0.0", 100)

        async def served() -> bool:
            with contextlib.suppress(OSError):
                status, body = await asyncio.to_thread(http_get, entry)
                return status == 200 and b"1.0.0" in body
            return False

        await async_eventually(served, timeout=20, message="served through haproxy")
    finally:
        await plane.shutdown()


async def test_bridged_instance_is_held_to_its_limit_both_ways(
        bridge: None, harness: AgentHarness) -> None:
    # this tree's demo app (GET /bytes, POST /upload): the build is a no-op when current
    await asyncio.to_thread(ensure_demo_images, ("1.0.0",))
    agent = await _agent(harness, bandwidth=True)
    rate, size = 16_000_000, 6 * MIB
    limited = await agent.start_instance(make_spec(
        "bw-br", network_mode=NetworkMode.BRIDGE, health=HealthSpec(interval_s=0.5),
        resources=ResourceSpec(cpu=1.0, memory=128 * MIB, network=rate)))
    free = await agent.start_instance(make_spec("bw-free", network_mode=NetworkMode.BRIDGE))
    detail = limited.enforcement["network"]
    assert "each way" in detail, limited.enforcement
    minor = agent.records.get("bw-br").classid
    assert minor is not None and free.enforcement["network"] == "none: no limit"
    shaper = agent.supervisor.shaper
    assert shaper is not None and shaper.net_cls is None  # no cgroup: the same on cgroup v2
    down = await asyncio.to_thread(download_rate, HOST_ADDRESS, limited.port, size)
    up = await asyncio.to_thread(upload_rate, HOST_ADDRESS, limited.port, size)
    free_down = await asyncio.to_thread(download_rate, HOST_ADDRESS, free.port, 8 * size)
    free_up = await asyncio.to_thread(upload_rate, HOST_ADDRESS, free.port, 8 * size)
    print(f"bridged, limit {rate / 1e6:g} Mbit/s: download {down / 1e6:.2f}, upload "
          f"{up / 1e6:.2f} Mbit/s; unlimited: download {free_down / 1e6:.0f}, upload "
          f"{free_up / 1e6:.0f} Mbit/s (a loaded 2-core machine)")
    assert 0.6 * rate < down < 1.3 * rate and 0.6 * rate < up < 1.3 * rate
    assert free_down > 5 * rate and free_up > 5 * rate
    veth = detail.rsplit(" ", 1)[-1]
    towards = await asyncio.to_thread(sh, "tc", "-s", "class", "show", "dev", veth)
    away = await asyncio.to_thread(sh, "tc", "-s", "class", "show", "dev", ifb_name(minor))
    for shown in (towards, away):
        assert f"class htb 1:{minor:x} " in shown and "rate 16Mbit" in shown, shown
    assert not agent.bus.recent(EventType.CRASHED)  # saturated, yet healthy
    shown = await asyncio.to_thread(sh, "ip", "-j", "link", "show", "type", "ifb")
    owner = ifb_owner(agent.config.host_id, "")
    assert owned_ifbs(shown, owner) == {ifb_name(minor): minor}  # its owner on it
    await agent.stop_instance("bw-br", grace=1)
    links = await asyncio.to_thread(sh, "ip", "-o", "link", "show")
    assert f" {ifb_name(minor)}:" not in links and f" {veth}@" not in links  # released


def _documented_rules() -> list[list[str]]:
    """The iptables lines docs/security.md gives a real host, for this test's bridge."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "security.md").read_text()
    lines = [line.split() for line in text.splitlines() if line.startswith("iptables -I ")]
    assert len(lines) == 4, lines
    return [[BRIDGE if word == "landlord0" else word for word in line] for line in lines]


async def test_the_documented_firewall_rules_close_the_gateway(
        bridge: None, harness: AgentHarness) -> None:
    agent = await _agent(harness)
    view = await agent.start_instance(make_spec("br-fw", network_mode=NetworkMode.BRIDGE))
    assert view.container_id is not None
    everywhere = socket.socket()  # a host service on all addresses, as sshd would be
    everywhere.bind(("0.0.0.0", 0))
    everywhere.listen(8)
    target = [("connect", GATEWAY, everywhere.getsockname()[1])]
    rules = _documented_rules()
    try:
        assert await _probe(view.container_id, target) == ["ok"]  # the gap the rules close
        for rule in rules:
            await asyncio.to_thread(sh, *rule)
        assert await _probe(view.container_id, target) != ["ok"]
        assert http_get(view.port)[0] == 200  # published port still served (established)
    finally:
        everywhere.close()
        for rule in rules:  # "-I CHAIN N spec" -> "-D CHAIN spec"
            await asyncio.to_thread(sh, "iptables", "-D", rule[2], *rule[4:])


async def test_an_agent_deletes_at_start_the_ifbs_of_its_gone_instances(
        harness: AgentHarness, tmp_path: Path) -> None:
    host = f"t{uuid.uuid4().hex[:8]}"
    mine = EgressShaper("lo", Path("/sys/fs/cgroup"), tmp_path, host)
    other = EgressShaper("lo", Path("/sys/fs/cgroup"), tmp_path, f"{host}x")
    gone = await asyncio.to_thread(mine.claim, set(), "gone")  # its agent crashed, say
    kept = await asyncio.to_thread(other.claim, set(), "elsewhere")  # another agent's
    try:
        await harness.agent(host_id=host, bandwidth=True)
        links = await asyncio.to_thread(sh, "ip", "-o", "link", "show", "type", "ifb")
        assert f" {ifb_name(gone)}:" not in links and f" {ifb_name(kept)}:" in links
    finally:
        await asyncio.to_thread(remove_owned_ifbs, ifb_owner(f"{host}x", ""))
        await asyncio.to_thread(remove_owned_ifbs, ifb_owner(host, ""))
