"""Who may say what, end to end with mutual TLS on (issue 14's list, as a hostile client).

A ``landlord-coordinator`` process and simulated agent processes (tests/e2e/cluster.py: the
real agent stream, a fake runtime) run over mutual TLS with certificates made at set-up
(scripts/local_cluster/pki.py); etcd requires client certificates of its own CA. The tests
are the clients a fleet meets: the `landlord` CLI without a certificate or as a viewer, a
host's certificate used for the admin API, an agent claiming another host and one that
reports about another host's instance, revoked and expired certificates, and plain or
foreign clients of etcd.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from local_cluster.processes import wait_for

from agent.stream.endpoint import ChangeBatch
from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.identity import Identity, Role
from common.pki import LeafRequest, issue
from common.stream_messages import MetricsWindow, ObservedInstance, ReportedEvent
from common.transport import TlsSettings
from tests.e2e.cluster import Cluster, SimulatedAgentProcess
from tests.e2e.test_cli_units import Cli
from tests.integration.coordinator.agents import start_agent
from tests.integration.coordinator.test_foreign_reports import ForgingRuntime
from tests.support import eventually

pytestmark = pytest.mark.timeout(180)

APARTMENT, UNIT = "idt", "web"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(prefix=f"/landlord-identity-{os.getpid()}")
    try:
        cluster.start_etcd()
        cluster.add_coordinator()
        wait_for(lambda: cluster.coordinator.leader_info().this_is_leader, 30, "leader")
        cluster.add_agent("idt-h1", "127.0.0.31")
        cluster.add_agent("idt-h2", "127.0.0.32")
        eventually(lambda: len(hosts(cluster)) == 2, timeout=30, message="both hosts alive")
        admin = cli(cluster)
        admin.json("units", "publish", f"{APARTMENT}/{UNIT}", "1.0.0", "--image", "demo:1",
                   "--feature", "first")
        deployed = admin.run("deploy", f"{APARTMENT}/{UNIT}", "1.0.0", "--replicas", "2",
                             "--wait")
        assert deployed.returncode == 0, deployed.stderr
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


def cli(cluster: Cluster, tls: TlsSettings | None = None) -> Cli:
    """The CLI as ``tls``'s identity (default: the cluster's admin)."""
    env = cluster.cli_env() if tls is None else {
        "LANDLORD_TLS_CA": tls.ca_file, "LANDLORD_TLS_CERT": tls.cert_file,
        "LANDLORD_TLS_KEY": tls.key_file}
    return Cli(cluster.coordinator.address, env)


def hosts(cluster: Cluster) -> dict[str, dict[str, Any]]:
    found = cli(cluster).json("hosts", "list")["hosts"]
    return {h["host_id"]: h for h in found if h["status"] == "alive"}


def instances(cluster: Cluster) -> dict[str, dict[str, Any]]:
    found = cli(cluster).json("instances", "list", "--unit", f"{APARTMENT}/{UNIT}")
    return {i["instance_id"]: i for i in found["instances"]}


def events(cluster: Cluster, *args: str) -> list[dict[str, Any]]:
    """`landlord events` as the admin: one JSON object per line."""
    done = cli(cluster).run("events", *args, "--output", "json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_a_client_without_a_certificate_is_refused(cluster: Cluster) -> None:
    line = Cli(cluster.coordinator.address).fails(1, "units", "list")
    assert "no client certificate was given" in line
    address = cluster.coordinator.address
    request = admin_pb2.PublishVersionRequest(version="9.9.9")
    with grpc.insecure_channel(address) as plain, pytest.raises(grpc.RpcError) as refused:
        admin_pb2_grpc.AdminStub(plain).PublishVersion(request, timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert cluster.pki is not None
    ca = (cluster.pki.root / "ca.pem").read_bytes()  # the server is trusted, no client cert
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(ca)) as anonymous, \
            pytest.raises(grpc.RpcError) as refused:
        admin_pb2_grpc.AdminStub(anonymous).GetLeader(admin_pb2.GetLeaderRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_viewer_lists_but_cannot_deploy(cluster: Cluster) -> None:
    assert cluster.pki is not None
    viewer = cli(cluster, cluster.pki.viewer("vera"))
    assert {i["host_id"] for i in viewer.json("instances", "list")["instances"]} == {
        "idt-h1", "idt-h2"}
    for args in (("deploy", f"{APARTMENT}/{UNIT}", "1.0.0"),
                 ("units", "publish", f"{APARTMENT}/{UNIT}", "1.0.1", "--image", "demo:1",
                  "--feature", "x")):
        line = viewer.fails(1, *args)
        assert "PERMISSION_DENIED" in line and "viewer/vera" in line, line


def test_a_host_certificate_cannot_call_the_admin_api(cluster: Cluster) -> None:
    assert cluster.pki is not None
    host = cli(cluster, cluster.pki.agent("idt-h1"))
    line = host.fails(1, "deploy", f"{APARTMENT}/{UNIT}", "1.0.0")
    assert "PERMISSION_DENIED" in line and "host/idt-h1" in line and "Deploy" in line, line
    assert "PERMISSION_DENIED" in host.fails(1, "hosts", "list")


def test_a_host_certificate_cannot_register_as_another_host(cluster: Cluster) -> None:
    assert cluster.pki is not None
    before = hosts(cluster)["idt-h2"]
    h2 = next(a for a in cluster.agents if a.host_id == "idt-h2")
    # a second simulated agent claims idt-h2 with idt-h1's certificate, at another address
    impostor = SimulatedAgentProcess(
        cluster.workdir, "idt-h2", "127.0.0.39", [cluster.coordinator.address],
        tls=cluster.pki.agent("idt-h1"), name="impostor").start()
    try:
        refusal = "registration refused: host/idt-h1 may not register as host 'idt-h2'"
        eventually(lambda: refusal in cluster.coordinator.log_path.read_text(errors="replace"),
                   timeout=20, message="the impostor refused")
        time.sleep(1.0)
        assert not impostor.state().get("connected"), impostor.state()
        after = hosts(cluster)["idt-h2"]
        assert after["address"] == before["address"] == "127.0.0.32", after
        assert h2.state().get("connected") and h2.running  # the real stream is untouched
    finally:
        impostor.stop(5)


def test_reports_about_another_hosts_instance_are_dropped(cluster: Cluster) -> None:
    """idt-h3 (an honest certificate, its own stream) forges a status, events and a
    metrics window (with a version the instance does not run) about idt-h2's instance:
    none of it changes anything."""
    assert cluster.pki is not None
    tls = cluster.pki.agent("idt-h3")
    placed = instances(cluster)
    victim = next(i for i, found in placed.items() if found["host_id"] == "idt-h2")

    async def forge() -> None:
        agent = start_agent([cluster.coordinator.address], "idt-h3", "127.0.0.33",
                            runtime_type=ForgingRuntime, tls=tls)
        try:
            async with asyncio.timeout(20):
                await agent.stream.connected.wait()
            runtime = agent.runtime
            assert isinstance(runtime, ForgingRuntime)
            now = time.time()
            runtime.forge(ChangeBatch(
                changed=[ObservedInstance(victim, "idt-h3", APARTMENT, UNIT, "1.0.0",
                                          placed[victim]["slot"], "error", reason="forged")],
                events=[ReportedEvent("rollout.promoted", now, "forged promotion", APARTMENT,
                                      UNIT, "1.0.0"),
                        ReportedEvent(EventType.CRASHED, now, "forged crash", APARTMENT, UNIT,
                                      "1.0.0", instance_id=victim)],
                # a host's windows about another host's instance count as its own entry
                # traffic (report_scope.py) only with that instance's unit and version
                windows=[MetricsWindow(APARTMENT, UNIT, "9.9.9", victim, "idt-h3", now - 1,
                                       now, requests=100, errors=100)]))
            await asyncio.sleep(2.0)
        finally:
            await agent.stop()

    asyncio.run(forge())
    log = cluster.coordinator.log_path.read_text(errors="replace")
    for kind in ("status", "event", "window"):
        assert "host idt-h3 reported" in log and f" {kind}(s) that are not its own" in log, kind
    assert instances(cluster)[victim]["state"] == placed[victim]["state"]
    assert not [e for e in events(cluster) if "forged" in json.dumps(e)]


def test_revoked_and_expired_certificates_are_refused(cluster: Cluster) -> None:
    assert cluster.pki is not None
    pki = cluster.pki
    mallory = cli(cluster, pki.admin("mallory"))
    mallory.json("hosts", "list")
    done = cli(cluster).run("certs", "revoke", pki.admin("mallory").cert_file,
                            "--ca-dir", str(pki.root))
    assert done.returncode == 0, done.stderr
    cluster.coordinator.signal(signal.SIGHUP)  # re-reads the CRL, streams stay up
    eventually(lambda: mallory.run("hosts", "list").returncode != 0, timeout=15,
               message="the revoked certificate refused")
    assert "revoked" in mallory.fails(1, "hosts", "list")

    ca = pki.files.load()  # a certificate that expired yesterday
    past = datetime.now(UTC) - timedelta(days=3)
    old = issue(ca, LeafRequest(Identity(Role.ADMIN, "oldtimer"), days=1), past)
    cert, key = pki.files.leaf("admin", "oldtimer")
    pki.files.write_leaf(old, cert, key)
    line = cli(cluster, TlsSettings(str(pki.files.cert), str(cert), str(key))).fails(
        1, "hosts", "list")
    assert "UNAVAILABLE" in line or "expired" in line, line
    assert cli(cluster).json("hosts", "list")  # the admin is still let in


def _etcd_put(cluster: Cluster, context: ssl.SSLContext | None, scheme: str = "https") -> Any:
    body = json.dumps({"key": "L2xhbmRsb3Jk", "value": "cG93bmVk"}).encode()
    request = urllib.request.Request(f"{scheme}://{cluster.etcd.endpoint}/v3/kv/put",
                                     data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5, context=context) as reply:
        return json.loads(reply.read())


def test_etcd_takes_only_the_coordinators_client_certificates(cluster: Cluster) -> None:
    assert cluster.pki is not None and cluster.etcd.tls is not None
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _etcd_put(cluster, None, scheme="http")  # plain text
    trusting = ssl.create_default_context(cafile=cluster.etcd.tls.server.ca_file)
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        _etcd_put(cluster, trusting)  # TLS, no client certificate
    host = cluster.pki.agent("idt-h1")
    trusting.load_cert_chain(host.cert_file, host.key_file)
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        _etcd_put(cluster, trusting)  # a host's certificate of the Landlord CA
    assert cluster.etcd.count_revision() > 1  # the coordinator's client certificate works


def test_audit_events_name_who_deployed_what(cluster: Cluster) -> None:
    audit = events(cluster, "--type", "audit")
    deploys = [e for e in audit if "Deploy" in json.dumps(e)]
    assert deploys, audit
    text = json.dumps(deploys[0])
    assert "admin/operator" in text and UNIT in text and "1.0.0" in text, text
    denied = [e for e in audit if "viewer/vera" in json.dumps(e)]
    assert denied, "the viewer's refused deploy is recorded"
