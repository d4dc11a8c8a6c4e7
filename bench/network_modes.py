"""Requests per second through HAProxy to real containers: bridged versus host networking
(prints only; nothing here passes or fails).

Three backends of one HAProxy unit, measured in interleaved rounds (one at a time at
weight 100), all containers of the demo image made with the agent's own container settings,
running a tiny asyncio HTTP server (the demo app's http.server answers in two writes and
stalls on delayed ACKs at ~45 ms a request, which hides any network cost):
- host:    a container on the host's network, listening on the advertise address;
- bridged: a container in its own network namespace on a bridge, its port published on
           the advertise address by docker-proxy (what the agent does);
- routed:  the same bridged container reached at its bridge address directly, the cost
           of routing (or DNAT, with dockerd's iptables) without docker-proxy.

Run: ``.venv/bin/python bench/network_modes.py [--seconds 2] [--rounds 5] [--concurrency 8]``
(root, Docker, the demo image; under /tmp/landlord-docker.lock with other Docker tests).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dataplane import measure, report, summarize  # noqa: E402

from agent.dataplane import DataPlane, DataPlaneSettings  # noqa: E402
from agent.instances.container_config import build_create_request  # noqa: E402
from agent.instances.spec import HealthSpec, InstanceSpec, ResourceSpec, Slot  # noqa: E402
from agent.runtime.docker_runtime import DockerRuntime  # noqa: E402
from common.network_modes import NetworkMode  # noqa: E402
from tests.integration.agent.agent_fixtures import DEMO_IMAGE, ensure_demo_images  # noqa: E402
from tests.integration.dataplane.dataplane_fixtures import free_port  # noqa: E402

ADVERTISE = "127.0.0.2"
NETWORK, SUBNET, BRIDGE = "landlord-bench", "198.18.251.0/24", "llbench0"
HOST_ID = "bench-netmodes"
SERVER = (  # answers every request at once, in one write: the network path is what counts
    "import asyncio, os\n"
    "REPLY = (b'HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\n'\n"
    "         b'X-Served-Version: 1.0.0\\r\\n\\r\\nok\\n')\n"
    "async def serve(reader, writer):\n"
    "    try:\n"
    "        while await reader.readuntil(b'\\r\\n\\r\\n'):\n"
    "            writer.write(REPLY)\n"
    "    except (asyncio.IncompleteReadError, ConnectionError):\n"
    "        writer.close()\n"
    "async def main():\n"
    "    bind, port = os.environ['BIND'], int(os.environ['PORT'])\n"
    "    server = await asyncio.start_server(serve, bind, port)\n"
    "    await server.serve_forever()\n"
    "asyncio.run(main())\n")


def spec(instance_id: str, mode: NetworkMode) -> InstanceSpec:
    return InstanceSpec(
        apartment="bench", unit="netmodes", version="1.0.0", slot=Slot.BLUE,
        instance_id=instance_id, image=DEMO_IMAGE, port=free_port(ADVERTISE),
        health=HealthSpec(), resources=ResourceSpec(cpu=2.0, memory=256 * 1024 * 1024),
        network_mode=mode, command=("python3", "-c", SERVER))


async def start(runtime: DockerRuntime, instance: InstanceSpec) -> str:
    request = build_create_request(
        instance, host_id=HOST_ID, advertise_address=ADVERTISE, generation=1,
        state_host_dir=None, extra_labels={"landlord.bench": "1"}, hard_storage_quota=False,
        bridge_network=NETWORK)
    container_id = await runtime.create(request)
    await runtime.start(container_id)
    return container_id


async def main(args: argparse.Namespace) -> None:
    ensure_demo_images()
    runtime = DockerRuntime()
    data_dir = Path(tempfile.mkdtemp(prefix="llnet-bench-"))
    plane = DataPlane(data_dir, ADVERTISE, settings=DataPlaneSettings(check_inter_ms=500,
                                                                       check_rise=1))
    containers: list[str] = []
    try:
        await runtime.ensure_network(NETWORK, SUBNET, BRIDGE)
        host, bridged = spec("host", NetworkMode.HOST), spec("bridged", NetworkMode.BRIDGE)
        containers += [await start(runtime, host), await start(runtime, bridged)]
        raw = (await runtime.inspect(containers[1])).raw
        bridge_ip = raw["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        await plane.start()
        entry = free_port(ADVERTISE)
        await plane.ensure_unit("bench", entry)
        backends = {"host": (ADVERTISE, host.port), "bridged": (ADVERTISE, bridged.port),
                    "routed": (bridge_ip, bridged.port)}
        for name, (address, port) in backends.items():
            await plane.add_server("bench", name, address, port, "1.0.0", 0)
        await asyncio.sleep(3.0)  # the demo apps start; HAProxy's checks pass
        print(f"HAProxy 2.6 on {ADVERTISE}, demo app containers, {args.concurrency} keep-alive"
              f" clients, {args.rounds} interleaved rounds of {args.seconds:.1f} s")
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in backends}
        for index in range(args.rounds):
            order = list(backends) if index % 2 == 0 else list(reversed(backends))
            for name in order:
                await plane.set_weights("bench", {n: 100 if n == name else 0 for n in backends})
                await asyncio.sleep(0.3)
                results = await measure(ADVERTISE, entry, args.seconds, args.concurrency)
                rounds[name].append(summarize(results, args.seconds))
        medians = {name: report(name, values)[0] for name, values in rounds.items()}
        for name in ("bridged", "routed"):
            print(f"  {name} / host: x{medians[name] / medians['host']:.2f} req/s")
    finally:
        await plane.shutdown()
        for container_id in containers:
            await runtime.remove(container_id, force=True)
        await asyncio.to_thread(_remove_network)
        await runtime.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _remove_network() -> None:
    import docker

    client = docker.from_env()
    try:
        client.networks.get(NETWORK).remove()
    except docker.errors.DockerException as exc:
        print(f"network {NETWORK} left behind: {exc}")
    finally:
        client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
