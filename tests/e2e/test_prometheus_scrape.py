"""A real Prometheus server scrapes a real cluster (docs/metrics.md, "Scraping with
Prometheus").

etcd, one `landlord-coordinator` and two `landlord-agent`s (127.0.0.41-42, building "demo",
mutual TLS) run as processes, each with its own metrics port on 127.0.0.1; Debian's
`prometheus` (tests/support/prometheus_server.py) scrapes the coordinator (job
`landlord-coordinator`) and the agents (job `landlord-agent`, each target labelled
`host_id`) every second. With e2e/scraped 1.0.0 deployed (two replicas, one per host),
PromQL through Prometheus' HTTP API must show: every target up, the coordinator leading with
both agents connected and both hosts alive and recently reported, the two replicas running
in the coordinator's view, and on each host one running instance and a connected stream.
"""

from __future__ import annotations

from collections.abc import Mapping

import docker
import pytest
from local_cluster.cluster import CLUSTER_LABEL
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.lifecycle import InstanceState
from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import list_hosts, publish, real_cluster, unit_spec
from tests.support import eventually
from tests.support.prometheus_server import PrometheusServer, ScrapeTarget

HOSTS = {host_id("p1"): "127.0.0.41", host_id("p2"): "127.0.0.42"}
APARTMENT, UNIT, VERSION = "e2e", "scraped", "1.0.0"
RUNNING = InstanceState.RUNNING.value

pytestmark = pytest.mark.timeout(180)


def scrape_targets(cluster: RealCluster) -> list[ScrapeTarget]:
    """The coordinator's and every agent's metrics endpoint, as an operator would list them."""
    return [*(ScrapeTarget("landlord-coordinator", c.metrics_address)
              for c in cluster.coordinators),
            *(ScrapeTarget("landlord-agent", a.metrics_address, {"host_id": a.host_id})
              for a in cluster.agents)]


def answers(prometheus: PrometheusServer, promql: str, label: str) -> dict[str, float]:
    """``promql``'s instant vector as label value -> sample value."""
    return {sample.labels.get(label, ""): sample.value for sample in prometheus.query(promql)}


def expectations(cluster: RealCluster) -> list[tuple[str, str, Mapping[str, float]]]:
    """(PromQL, label to key the answer by, the answer) once the deployment runs."""
    coordinator = cluster.coordinator.metrics_address
    per_host = {host: 1.0 for host in HOSTS}
    return [
        ("up", "instance", {coordinator: 1.0, **{a.metrics_address: 1.0 for a in cluster.agents}}),
        ("landlord_coordinator_leader == 1", "instance", {coordinator: 1.0}),
        ("landlord_agents_connected", "instance", {coordinator: 2.0}),
        ('sum by (status) (landlord_hosts{building="demo", status="alive"})', "status",
         {"alive": 2.0}),
        ("count by (host) (landlord_agent_last_report_age_seconds < 15)", "host", per_host),
        (f'sum by (version) (landlord_instances{{apartment="{APARTMENT}", unit="{UNIT}", '
         f'state="{RUNNING}"}})', "version", {VERSION: 2.0}),
        ('landlord_admin_calls_total{method="Deploy", code="OK"}', "method", {"Deploy": 1.0}),
        (f'landlord_agent_instances{{job="landlord-agent", state="{RUNNING}"}}', "host_id",
         per_host),
        ('landlord_agent_stream_connected{job="landlord-agent"}', "host_id", per_host),
    ]


def all_answered(prometheus: PrometheusServer, cluster: RealCluster) -> bool:
    """Every expectation holds now (AssertionError naming the ones that do not)."""
    wrong = {}
    for promql, label, expected in expectations(cluster):
        found = answers(prometheus, promql, label)
        if found != expected:
            wrong[promql] = f"{found} (expected {dict(expected)})"
    assert not wrong, wrong
    return True


def test_prometheus_scrapes_coordinator_and_agents() -> None:
    with real_cluster(hosts=HOSTS) as cluster, \
            PrometheusServer(scrape_targets(cluster)) as prometheus:
        eventually(lambda: [h.status for h in list_hosts(cluster)] == ["alive"] * 2,
                   timeout=60, message="two hosts registered and alive")
        port = free_port_on_all(list(HOSTS.values()))
        with cluster.admin() as admin:
            publish(admin, unit_spec(APARTMENT, UNIT, VERSION, port), VERSION,
                    types_pb2.ChangeSet(features=["scraped"]))
            admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=UNIT,
                                                 version=VERSION, building="demo", replicas=2),
                         timeout=30)
        try:
            eventually(lambda: all_answered(prometheus, cluster), timeout=60, interval=0.5,
                       message="Prometheus answers for the running deployment")
        except AssertionError:
            print("prometheus targets:", prometheus.targets())
            print("prometheus log:", prometheus.log_tail())
            raise
    assert not prometheus.running and not prometheus.workdir.exists(), "prometheus left over"
    client = docker.from_env()
    try:
        leftovers = client.containers.list(all=True,
                                           filters={"label": f"{CLUSTER_LABEL}={cluster.name}"})
    finally:
        client.close()
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"
