"""What the real-cluster end-to-end tests share: the cluster, units, and client load.

- ``real_cluster()``: a RealCluster (tests/e2e/real_cluster.py) with the three simulated
  hosts of ``HOSTS`` (building "demo") started, closed whatever happens, its logs printed
  when something fails;
- ``unit_spec()`` / ``publish()``: a version of a unit running landlord/demo-app;
- ``list_hosts()`` / ``list_instances()``: the Admin API's reads; ``unit_containers()``:
  what Docker runs for a unit;
- ``Load``: the launcher's load generator on the hosts' entry points, on the monotonic clock
  the tests measure with, so a test can say "zero failed requests" and "every answer since
  then came from version X".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import docker
from google.protobuf import duration_pb2
from local_cluster.daemons import CoordinatorProcess
from local_cluster.images import demo_image, ensure_demo_images
from local_cluster.load import Answer, LoadGenerator, failed, http_get
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import OWNER, TEST_LABEL, RealCluster, host_id
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

__all__ = [
    "COORDINATOR_SETTINGS",
    "HOSTS",
    "Answer",
    "Load",
    "failed",
    "free_ports",
    "list_hosts",
    "list_instances",
    "publish",
    "real_cluster",
    "real_cluster_cli",
    "seconds",
    "serving",
    "unit_containers",
    "unit_spec",
]

HOSTS = {host_id("h1"): "127.0.0.2", host_id("h2"): "127.0.0.3", host_id("h3"): "127.0.0.4"}
"""Simulated host id -> its loopback address (the agent's advertise address)."""
NETWORK_BPS = 100_000_000
"""The units' network limit: enforced (the agents shape it), generous enough to slow nothing."""
COORDINATOR_SETTINGS: dict[str, Any] = {
    # heartbeat 2 s: a host is suspect after 3 s of silence, which a busy 2-core machine
    # starting three agents and their containers must not reach by accident
    "heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 3.0,
}


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


@contextlib.contextmanager
def real_cluster(coordinators: int = 1, settings: dict[str, Any] | None = None,
                 hosts: Mapping[str, str] | None = None,
                 agent_settings: Mapping[str, str] | None = None) -> Iterator[RealCluster]:
    """etcd, ``coordinators`` coordinators (``settings``, default COORDINATOR_SETTINGS) and an
    agent on every host of ``hosts`` (default ``HOSTS``; ``agent_settings`` on top of the
    launcher's), in building ``demo``."""
    ensure_demo_images()
    real = RealCluster(COORDINATOR_SETTINGS if settings is None else settings)
    try:
        real.start(coordinators)
        for host_id, address in (HOSTS if hosts is None else hosts).items():
            real.add_agent(host_id, address, "demo", agent_settings)
        yield real
    except BaseException:
        print(real.logs())
        raise
    finally:
        real.close()


@contextlib.contextmanager
def real_cluster_cli(settings: dict[str, Any], hosts: Mapping[str, str],
                     agent_settings: Mapping[str, str] | None = None
                     ) -> Iterator[tuple[RealCluster, Cli]]:
    """``real_cluster`` (one coordinator) and the installed `landlord` as its admin, once
    every host is alive."""
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    with real_cluster(settings=settings, hosts=hosts, agent_settings=agent_settings) as real:
        cli = Cli(real.coordinator.address, real.cli_env())

        def all_alive() -> bool:
            found = cli.json("hosts", "list")["hosts"]
            return len([h for h in found if h["status"] == "alive"]) == len(hosts)

        eventually(all_alive, timeout=60, interval=0.5, message="every host alive")
        yield real, cli


def unit_spec(apartment: str, unit: str, version: str, service_port: int, *,
              env: dict[str, str] | None = None, dependencies: Sequence[str] = (),
              state_mode: types_pb2.StateMode.ValueType = types_pb2.STATE_MODE_UNSPECIFIED,
              cpu_millis: int = 100, memory_bytes: int = 64 << 20,
              network_bps: int = NETWORK_BPS) -> types_pb2.UnitSpec:
    """The demo app ``version`` from the local registry behind ``service_port`` on every
    host, health-checked on /healthz every second, held to ``network_bps`` each way."""
    return types_pb2.UnitSpec(
        apartment=apartment, unit=unit, image=demo_image(version), port=0,
        service_port=service_port, env=env or {}, dependencies=list(dependencies),
        state_mode=state_mode,
        health=types_pb2.HealthCheck(path="/healthz", interval=seconds(1), timeout=seconds(1),
                                     healthy_threshold=1, unhealthy_threshold=2),
        resources=types_pb2.Resources(cpu_millis=cpu_millis, memory_bytes=memory_bytes,
                                      network_bps=network_bps),
    )


def publish(admin: Any, spec: types_pb2.UnitSpec, version: str,
            changes: types_pb2.ChangeSet) -> Any:
    """PublishVersion; returns the published VersionInfo."""
    request = admin_pb2.PublishVersionRequest(spec=spec, version=version, changes=changes)
    return admin.PublishVersion(request, timeout=30).version


def list_hosts(cluster: RealCluster, coordinator: CoordinatorProcess | None = None) -> list[Any]:
    with cluster.admin(coordinator) as admin:
        return list(admin.ListHosts(admin_pb2.ListHostsRequest(), timeout=5).hosts)


def list_instances(cluster: RealCluster, apartment: str, unit: str,
                   coordinator: CoordinatorProcess | None = None) -> list[Any]:
    with cluster.admin(coordinator) as admin:
        request = admin_pb2.ListInstancesRequest(apartment=apartment, unit=unit)
        return list(admin.ListInstances(request, timeout=5).instances)


def unit_containers(unit: str, **labels: str) -> list[Any]:
    """This pytest's running containers of ``unit``, narrowed by more labels."""
    client = docker.from_env()
    try:
        wanted = [TEST_LABEL, OWNER, f"landlord.unit={unit}",
                  *(f"{k}={v}" for k, v in labels.items())]
        return list(client.containers.list(filters={"label": wanted}))
    finally:
        client.close()


def free_ports(count: int) -> list[int]:
    """``count`` different ports, each free on every host of ``HOSTS`` now."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port_on_all(list(HOSTS.values())))
    return sorted(ports)


def serving(port: int, addresses: Iterable[str] = HOSTS.values()) -> bool:
    """Every entry point answers GET / with 200 (raises otherwise; for ``eventually``)."""
    for address in addresses:
        status, _ = http_get(address, port, timeout=5)
        assert status == 200, (address, status)
    return True


class Load(LoadGenerator):
    """One client thread per host entry point (default: every host of ``HOSTS``), times on
    ``time.monotonic``; records every answer."""

    def __init__(self, port: int, addresses: Iterable[str] = HOSTS.values()) -> None:
        super().__init__(list(addresses), port, clock=time.monotonic)

    def since(self, start: float) -> list[Answer]:
        return self.answers(start)

    def settled(self, count: int = 60, timeout: float = 30.0) -> float:
        """Wait for ``count`` answers from now on; returns when "now" was."""
        start = time.monotonic()
        eventually(lambda: len(self.since(start)) >= count, timeout=timeout,
                   message=f"{count} answers")
        return start
