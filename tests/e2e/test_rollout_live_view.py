"""`landlord rollout status` of a running canary on a real cluster under load: per entry
host, the measured share of each version within 5 points of its target and a p95; piped,
`--watch` prints one JSON document per update.

etcd, a coordinator, two real agents (Docker + HAProxy on 127.0.0.51-52) and a client per
host entry point. e2e/live 1.0.0 runs two replicas; a canary to 1.1.0 holds its first step
(30 %) for a minute, and the test reads the live view during that step. e2e/live1 does the
same with one replica per version, 1.0.0 on one host and 1.1.0 on the other: every host's
HAProxy routes to both, so each entry host must still measure 30 % for the canary (not the
0 % or 100 % of counting only the instances on the entry host).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from local_cluster.images import demo_image
from local_cluster.processes import free_port_on_all
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import Load, real_cluster, serving
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

HOSTS = {host_id("h1"): "127.0.0.51", host_id("h2"): "127.0.0.52"}
UNIT = "e2e/live"
SPLIT_UNIT = "e2e/live1"
"""One replica per version: the stable on one host, the canary on the other."""
TARGET = {"1.0.0": 70.0, "1.1.0": 30.0}
TOLERANCE = 5.0  # points of share

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def real() -> Iterator[RealCluster]:
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    settings = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 2.0}
    with real_cluster(settings=settings, hosts=HOSTS) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cli(real: RealCluster) -> Cli:
    return _ready(real)


def _ready(cluster: RealCluster) -> Cli:
    cli = Cli(cluster.coordinator.address, cluster.cli_env())

    def all_alive() -> bool:
        hosts = cli.json("hosts", "list")["hosts"]
        return len([h for h in hosts if h["status"] == "alive"]) == len(HOSTS)

    eventually(all_alive, timeout=60, interval=0.5, message="both hosts alive")
    return cli


def _running(cli: Cli) -> set[str]:
    found = cli.json("instances", "list", "--unit", UNIT)["instances"]
    return {i["version"] for i in found if i["state"] == "INSTANCE_STATE_RUNNING"}


@contextlib.contextmanager
def canary_under_load(cli: Cli, unit: str, replicas: int,
                      entry_hosts: Mapping[str, str] = HOSTS) -> Iterator[str]:
    """``unit`` 1.0.0 deployed (``replicas``) and under load on every entry host, then a
    canary to 1.1.0 in its 30 % step; yields the rollout id."""
    port = free_port_on_all(list(entry_hosts.values()))
    for version in ("1.0.0", "1.1.0"):
        cli.json("units", "publish", unit, version, "--image", demo_image(version),
                 "--port", "0", "--service-port", str(port), "--health-path", "/healthz",
                 "--health-interval", "1s", "--health-timeout", "1s", "--cpu", "100m",
                 "--memory", "64Mi")
    first = cli.run("deploy", unit, "1.0.0", "--building", "demo", "--replicas",
                    str(replicas), "--wait", "--output", "json", timeout=120)
    assert first.returncode == 0, (first.stdout[-2000:], first.stderr)
    eventually(lambda: serving(port, entry_hosts.values()), timeout=60, interval=0.5,
               message="every entry point serves")
    load = Load(port, addresses=tuple(entry_hosts.values())).start(max_seconds=200)
    try:
        started = cli.json("deploy", unit, "1.1.0", "--strategy", "canary", "--replicas",
                           str(replicas), "--steps", "30,100", "--monitor", "60s",
                           "--step-delay", "1s", "--max-error-rate", "5%",
                           "--min-requests", "20")["rollout"]
        yield started["rollout_id"]
    finally:
        load.close()


@pytest.fixture(scope="module")
def canary(cli: Cli) -> Iterator[str]:
    """1.0.0 on two replicas and under load, then a canary to 1.1.0 in its 30 % step."""
    with canary_under_load(cli, UNIT, 2) as rollout_id:
        yield rollout_id


def per_host(info: dict[str, Any], entry_hosts: Mapping[str, str] = HOSTS
             ) -> dict[str, dict[str, dict[str, Any]]]:
    """host -> version -> its traffic figures; asserts the view the issue asks for: every
    host, both versions, measured share within TOLERANCE of the target, a p95."""
    assert info["phase"] == "switching" and info["measured_live"], (info["phase"], info["reason"])
    assert info["current_step"] == 0, info["current_step"]
    hosts: dict[str, dict[str, dict[str, Any]]] = {}
    for w in info["hosts"]:
        hosts.setdefault(w["host_id"], {})[w["version"]] = w
    assert set(hosts) == set(entry_hosts), sorted(hosts)
    for host, versions in hosts.items():
        assert set(versions) == set(TARGET), (host, sorted(versions))
        for version, w in versions.items():
            assert w["target_percent"] == TARGET[version], (host, w)
            assert w["requests"] >= 50, (host, w)  # enough to read a share from
            assert abs(w["measured_percent"] - TARGET[version]) <= TOLERANCE, (host, w)
            assert "p95_ms" in w and w["p95_ms"] >= 0, (host, w)  # HAProxy times whole ms
    return hosts


def _status_on_target(cli: Cli, unit: str, rollout_id: str) -> dict[str, Any]:
    """The CLI's JSON status of ``unit`` once every host's figures are on target."""
    def shown() -> dict[str, Any]:
        result = cli.run("rollout", "status", unit, "-o", "json")
        assert result.returncode == 0, result.stderr
        info: dict[str, Any] = json.loads(result.stdout)  # one JSON document
        assert info["rollout_id"] == rollout_id
        per_host(info)
        return info

    info = eventually(shown, timeout=60, interval=1.0, message="per-host figures on target")
    print(unit, "per host:", shares(info))
    return info


def shares(info: dict[str, Any]) -> list[tuple[str, str, float, float, int, float]]:
    """(host, version, target %, measured %, requests, p95 ms) of each host's figures."""
    return [(w["host_id"], w["version"], w["target_percent"], w["measured_percent"],
             w["requests"], w["p95_ms"]) for w in info["hosts"]]


def one_version_per_host(cli: Cli, unit: str) -> dict[str, str]:
    """version -> the one host running it; asserts each version runs on a different host."""
    found = cli.json("instances", "list", "--unit", unit)["instances"]
    placed = {i["version"]: i["host_id"] for i in found}
    assert len(found) == 2 and set(placed) == set(TARGET), found
    assert placed["1.0.0"] != placed["1.1.0"], placed
    return placed


def test_status_shows_each_hosts_measured_share_and_p95(cli: Cli, canary: str) -> None:
    info = _status_on_target(cli, UNIT, canary)
    split = {w["version"]: w for w in info["split"]}
    assert all(abs(split[v]["measured_percent"] - TARGET[v]) <= TOLERANCE for v in TARGET), split
    table = cli.run("rollout", "status", UNIT)  # for people: the same figures per host
    assert table.returncode == 0, table.stderr
    assert "traffic by host" in table.stdout
    for host in HOSTS:
        assert table.stdout.count(host) >= 2, table.stdout  # a row per version


def test_watch_piped_prints_a_json_line_per_update(cli: Cli, canary: str) -> None:
    # no --output: into a pipe, a watch prints JSON lines by itself
    lines: list[str] = []
    with subprocess.Popen([str(LANDLORD), "--coordinator", cli.addresses, "rollout", "status",
                           UNIT, "--watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=cli.env) as proc:

        def read() -> None:
            for line in proc.stdout or ():
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            # the coordinator sends live figures again every 2 s
            eventually(lambda: len(lines) >= 4, timeout=15, interval=0.2, message="4 updates")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)
            reader.join(timeout=5)
            err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err
    updates = [json.loads(line) for line in lines]  # each line one whole document
    assert {u["rollout_id"] for u in updates} == {canary}
    per_host(updates[-1])


def _server_weights(agent_metrics: str, unit: str) -> dict[str, float]:
    """version -> the weight an agent's /metrics says its HAProxy gives the unit's server."""
    with urllib.request.urlopen(f"http://{agent_metrics}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {s.labels["version"]: s.value
            for family in text_string_to_metric_families(text)
            if family.name == "landlord_agent_server_weight"
            for s in family.samples if s.labels["unit"] == unit}


def test_one_replica_per_host_each_entry_host_measures_the_target_share(
        real: RealCluster, cli: Cli) -> None:
    with canary_under_load(cli, SPLIT_UNIT, 1) as rollout_id:
        print("placed:", one_version_per_host(cli, SPLIT_UNIT))
        _status_on_target(cli, SPLIT_UNIT, rollout_id)
        # every host's HAProxy routes to both instances, 70/30 (landlord_agent_server_weight)
        for agent in real.agents:
            weights = _server_weights(agent.metrics_address, SPLIT_UNIT.replace("/", "."))
            print(agent.host_id, "server weights:", weights)
            assert set(weights) == set(TARGET), (agent.host_id, weights)
            share = 100 * weights["1.1.0"] / sum(weights.values())
            assert share == pytest.approx(TARGET["1.1.0"], abs=1), (agent.host_id, weights)
