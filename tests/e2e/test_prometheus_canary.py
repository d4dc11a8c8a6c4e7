"""A real Prometheus watches a canary on a real cluster under load (docs/metrics.md).

etcd, a coordinator and two `landlord-agent`s (Docker + HAProxy on 127.0.0.83-84, crash
retries cut to one) run as processes; Debian's `prometheus` (tests/support/prometheus_server.py)
scrapes, every second, the coordinator, both agents and both hosts' HAProxy exporters (the
launcher gives every agent its own `haproxy_metrics_listen` port), each host's targets
labelled `host_id`. e2e/pcanary 1.0.0 runs two replicas under load on both entry points,
and a canary to 1.1.0 walks steps 20, 50, 100. Prometheus must answer, in PromQL:

(a) the canary's target weight at each step (`landlord_rollout_target_weight_ratio`, read
    while the step runs), and the weights each host's HAProxy then carries
    (`haproxy_server_weight`, servers mapped to versions by the agents' per-instance
    series);
(b) the canary's share of the requests each host's HAProxy sent during the step, within 5
    points of the target. It comes from HAProxy's exporter (`haproxy_server_http_responses_total`
    of the unit's weighted backend): every host's entry point is a scrape target of its own,
    so the share is per entry host, and it counts every request the weights split. The
    coordinator's `landlord_rollout_analysis_*` figures are the canary and stable sides
    merged over all hosts, and only for a step already judged;
(c) a recovery counted after `docker kill` of a running instance
    (`landlord_agent_recoveries_total{kind="container_crash", outcome="succeeded"}` on its host);
(d) an escalation: e2e/pcrash crashes 0.5 s after every start, inside its 30 s health warm-up,
    so no try ever becomes ready and the single retry is exhausted
    (`landlord_agent_escalations_total{kind="container_crash"}`).

A missing or wrong figure fails the test with the query and what Prometheus answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import docker
import pytest
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import OWNER, RealCluster, host_id
from tests.e2e.real_load import Load, publish, real_cluster, seconds, serving, unit_spec
from tests.support import eventually
from tests.support.prometheus_server import PrometheusServer, ScrapeTarget

HOSTS = {host_id("pc1"): "127.0.0.83", host_id("pc2"): "127.0.0.84"}
APARTMENT, UNIT, CRASHING = "e2e", "pcanary", "pcrash"
STABLE, CANARY = "1.0.0", "1.1.0"
STEPS = (20, 50, 100)
TOLERANCE = 5.0  # points of share
AGENT_SETTINGS = {"crash_max_retries": "1", "crash_delay": "0.5"}
BACKEND = f'proxy="be.{APARTMENT}.{UNIT}"'
pytestmark = pytest.mark.timeout(180)


def scrape_targets(cluster: RealCluster) -> list[ScrapeTarget]:
    """The coordinator, every agent and every host's HAProxy, as an operator lists them."""
    return [*(ScrapeTarget("landlord-coordinator", c.metrics_address)
              for c in cluster.coordinators),
            *(ScrapeTarget("landlord-agent", a.metrics_address, {"host_id": a.host_id})
              for a in cluster.agents),
            *(ScrapeTarget("haproxy", a.haproxy_metrics_address, {"host_id": a.host_id})
              for a in cluster.agents)]


@dataclass
class Asker:
    """PromQL through one Prometheus; every answer keyed by one label."""

    prometheus: PrometheusServer

    def by(self, label: str, promql: str) -> dict[str, float]:
        return {s.labels.get(label, ""): s.value for s in self.prometheus.query(promql)}

    def expect(self, label: str, promql: str | Callable[[], str],
               check: Callable[[dict[str, float]], bool], what: str,
               timeout: float = 20.0) -> dict[str, float]:
        """Poll ``promql`` (or the query it makes now) until ``check`` holds; else fail
        naming the query and the answer."""
        seen: dict[str, float] = {}

        def holds() -> bool:
            query = promql() if callable(promql) else promql
            seen.clear()
            seen.update(self.by(label, query))
            assert check(seen), f"{what}: {query} answered {seen}"
            return True

        eventually(holds, timeout=timeout, interval=0.25, message=what)
        return dict(seen)


def of_version(series: str, version: str) -> str:
    """``series`` of the unit's HAProxy servers (named by instance id) that are instances of
    ``version``: the agents' per-instance series carry both the id and the version."""
    instances = (f'landlord_instance_pids{{apartment="{APARTMENT}", unit="{UNIT}", '
                 f'version="{version}"}}')
    return (f'({series} and on (server) '
            f'label_replace({instances}, "server", "$1", "instance_id", "(.+)"))')


def per_host_share(version: str, window: float) -> str:
    """Share (0-1) of the requests each host's HAProxy sent to ``version`` over ``window``
    seconds, from the exporter's per-server response counters."""
    responses = f"increase(haproxy_server_http_responses_total{{{BACKEND}}}[{window:.0f}s])"
    return (f"sum by (host_id) {of_version(responses, version)} "
            f"/ sum by (host_id) ({responses})")


def per_host_weight(version: str) -> str:
    """Share (0-1) of the weight each host's HAProxy gives ``version``'s servers."""
    weights = f"haproxy_server_weight{{{BACKEND}}}"
    return f"sum by (host_id) {of_version(weights, version)} / sum by (host_id) ({weights})"


def target_weight(version: str) -> str:
    return (f'landlord_rollout_target_weight_ratio{{apartment="{APARTMENT}", unit="{UNIT}", '
            f'version="{version}"}}')


def exactly(expected: dict[str, float]) -> Callable[[dict[str, float]], bool]:
    return lambda found: found == expected


def every_host(expected: float, tolerance: float = 1e-6) -> Callable[[dict[str, float]], bool]:
    return lambda found: (set(found) == set(HOSTS)
                          and all(abs(v - expected) <= tolerance for v in found.values()))


@pytest.fixture(scope="module")
def watched() -> Iterator[tuple[RealCluster, Asker, int]]:
    with real_cluster(settings={"heartbeat_interval": 2.0, "liveness_grace": 10.0,
                                "stop_grace": 2.0},
                      hosts=HOSTS, agent_settings=AGENT_SETTINGS) as cluster, \
            PrometheusServer(scrape_targets(cluster)) as prometheus:
        asker = Asker(prometheus)
        asker.expect("instance", "up == 1", lambda f: len(f) == 5, "every target up", 60)
        port = crash_port = free_port_on_all(list(HOSTS.values()))
        while crash_port == port:
            crash_port = free_port_on_all(list(HOSTS.values()))
        with cluster.admin() as admin:
            for version in (STABLE, CANARY):
                publish(admin, unit_spec(APARTMENT, UNIT, version, port), version,
                        types_pb2.ChangeSet(features=[version]))
            crashing = unit_spec(APARTMENT, CRASHING, STABLE, crash_port,
                                 env={"CRASH_AFTER_S": "0.5"})
            crashing.health.warmup.CopyFrom(seconds(30))  # never ready before it crashes
            publish(admin, crashing, STABLE, types_pb2.ChangeSet(features=["crash"]))
            admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=UNIT,
                                                 version=STABLE, building="demo", replicas=2),
                         timeout=30)
        eventually(lambda: serving(port, HOSTS.values()), timeout=60, interval=0.5,
                   message="every entry point serves")
        yield cluster, asker, port


def _canary() -> admin_pb2.DeployRequest:
    request = admin_pb2.DeployRequest(apartment=APARTMENT, unit=UNIT, version=CANARY,
                                      building="demo", replicas=2,
                                      strategy=types_pb2.STRATEGY_CANARY)
    request.canary.steps.extend(STEPS)
    request.canary.monitor.CopyFrom(seconds(7))
    request.canary.step_delay.CopyFrom(seconds(0.5))
    request.canary.inconclusive_deadline.CopyFrom(seconds(30))
    request.criteria.max_error_rate = 0.05
    request.criteria.min_requests = 20
    return request


def test_prometheus_follows_a_canary_a_recovery_and_an_escalation(
        watched: tuple[RealCluster, Asker, int]) -> None:
    cluster, asker, port = watched
    try:
        _follow(cluster, asker, port)
    except BaseException:  # what the daemons and Prometheus said, then the failure
        print(cluster.logs(120))
        print("prometheus targets:", asker.prometheus.targets())
        print("prometheus log:", asker.prometheus.log_tail())
        raise


def _follow(cluster: RealCluster, asker: Asker, port: int) -> None:
    load = Load(port, addresses=HOSTS.values()).start(max_seconds=150)
    try:
        deployed_at = time.time()
        with cluster.admin() as admin:
            admin.Deploy(_canary(), timeout=30)
            # the crash-looping unit runs its course next to the canary
            admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=CRASHING,
                                                 version=STABLE, building="demo", replicas=1),
                         timeout=30)
        shares: dict[int, dict[str, float]] = {}
        for percent in STEPS:
            ratio = percent / 100
            # (a) the step's target, while it runs; then each host's HAProxy carries it
            asker.expect("version", target_weight(CANARY), exactly({CANARY: ratio}),
                         f"target weight of the {percent} % step", timeout=40)
            asker.expect("host_id", per_host_weight(CANARY), every_host(ratio, 0.01),
                         f"HAProxy weights of the {percent} % step", timeout=15)
            began = time.time()
            time.sleep(4.0)  # four scrapes of requests split by this step's weights
            window = time.time() - began
            # (b) the canary's share of each entry host's requests in that window
            promql = per_host_share(CANARY, window)
            shares[percent] = found = asker.by("host_id", promql)
            assert set(found) == set(HOSTS) and all(
                abs(100 * v - percent) <= TOLERANCE for v in found.values()), (
                f"canary share of the {percent} % step: {promql} answered {found}")
        print("canary share per host, by step:",
              {p: {h: round(100 * v, 1) for h, v in f.items()} for p, f in shares.items()})
        asker.expect("version", target_weight(CANARY), lambda f: not f,
                     "the canary ended (its series gone)", timeout=40)
    finally:
        load.close()

    # (c) a killed instance is replaced and counted as a recovery on its host; increase()
    # over the time since the kill, as an alert would ask
    killed_at = time.time()
    victim = _kill_one(CANARY)
    asker.expect("host_id", lambda: _increase_since(
        'landlord_agent_recoveries_total{kind="container_crash", outcome="succeeded"}',
        killed_at), lambda f: f.get(victim, 0) >= 1, f"a recovery counted on {victim}",
        timeout=40)
    # (d) the crash loop exhausted its retry and was escalated (since the deploy)
    asker.expect("host_id", lambda: _increase_since(
        'landlord_agent_escalations_total{kind="container_crash"}', deployed_at),
        lambda f: sum(f.values()) >= 1, "an escalation counted", timeout=60)


def _increase_since(counter: str, moment: float) -> str:
    """Per host, how much ``counter`` grew since ``moment`` (the range reaches one scrape
    further back, for the sample before it)."""
    return f"sum by (host_id) (increase({counter}[{time.time() - moment + 1.5:.0f}s]))"


def _kill_one(version: str) -> str:
    """``docker kill`` one running instance of ``version`` of the unit; its host id."""
    client = docker.from_env()
    try:
        found = client.containers.list(filters={"label": [
            OWNER, f"landlord.apartment={APARTMENT}", f"landlord.unit={UNIT}",
            f"landlord.version={version}"]})
        assert found, f"no running container of {UNIT} {version}"
        victim = found[0]
        host = victim.labels["landlord.host"]
        assert host in HOSTS, victim.labels
        victim.kill()
        return str(host)
    finally:
        client.close()
