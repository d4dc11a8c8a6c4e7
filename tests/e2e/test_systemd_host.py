"""Landlord installed with `make install` on a booted systemd host, run by systemctl.

One machine (tests/support/nspawn.py: systemd-nspawn on a cached Debian bookworm rootfs,
sharing this machine's network, Docker socket and etcd) serves every test, in file order:

1. `make install` from a wheelhouse built here (pip runs with --no-index), a second run
   changes nothing, `systemd-analyze verify` passes on both installed units;
2. `--check-config` of both daemons refuses a bad config with one line per error, exit 2,
   and a daemon started by systemd with a bad setting fails once, without a restart loop;
3. landlord-coordinator (host etcd, own prefix, mutual TLS with its keys handed over by
   LoadCredential= to its dynamic user) and landlord-agent (own host id, address 127.0.0.13,
   labelled containers) started with systemctl serve a unit published and deployed with
   the installed `landlord` CLI: published by tag from a local registry, which the
   coordinator resolves to its digest, and pulled by the agent by that digest;
4. `systemctl restart landlord-agent` under load: the same containers (ids, StartedAt),
   no failed request;
5. a coordinator stopped with SIGSTOP is killed by the watchdog and restarted;
6. installing a newer build (a copy of this tree with a bumped version) and restarting the
   agent, then the coordinator: the same containers, no failed request, the new code runs;
7. `make uninstall` removes what the install added and leaves the workloads running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from host_install import copy_source
from local_cluster.daemons import remove_containers, toml_value
from local_cluster.etcd import EtcdProcess, EtcdTls
from local_cluster.load import LoadGenerator, failed, http_get
from local_cluster.processes import free_port_on_all

from common.transport import TlsSettings
from tests.e2e.real_cluster import OWNER, TEST_LABEL, _claim_port_slot, host_id
from tests.e2e.real_load import COORDINATOR_SETTINGS
from tests.integration.agent.agent_fixtures import ensure_demo_images
from tests.support import eventually
from tests.support.nspawn import HOST_CGROUP, Bind, BootedHost, host_rootfs
from tests.support.registry import LocalRegistry, start_registry, unique_image

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "127.0.0.13"  # this test's agent; no other test uses it
HOST = host_id("nspawn")
CLUSTER_LABEL = f"landlord.cluster=nspawn-{os.getpid()}"
PREFIX = f"/landlord-nspawn-{os.getpid()}"
UNITS = ("/usr/local/lib/systemd/system/landlord-agent.service",
         "/usr/local/lib/systemd/system/landlord-coordinator.service")
APARTMENT_UNIT, VERSION = "e2e/sysd", "1.0.0"
LOCAL_TAG = f"landlord-test/nspawn-demo:{os.getpid()}"
"""The demo app plus a layer of its own (so deploying really pulls it), pushed to a local
registry; the unit runs it by digest."""
CREDENTIALS = "/run/credentials/landlord-coordinator.service"
"""$CREDENTIALS_DIRECTORY of the coordinator: LoadCredential=tls:/etc/landlord/tls puts
/etc/landlord/tls/<file> there as tls_<file>."""
AGENT_TLS = "/etc/landlord/agent-tls"


@dataclass
class Machine:
    host: BootedHost
    work: Path
    """Wheelhouses and the newer build's tree (read-only inside, same path)."""
    data_dir: Path
    coordinator: str
    service_port: int
    port_range: tuple[int, int]
    registry: LocalRegistry
    etcd: EtcdProcess
    """This test's etcd on the machine's loopback: TLS, client certificates required."""
    image: str
    """The unit's image as published: 127.0.0.1:PORT/nspawn-demo:1.0.0 in the registry."""
    pinned: str
    """What publishing must resolve it to and the agent pulls and runs:
    127.0.0.1:PORT/nspawn-demo@<the digest docker push printed>."""

    @property
    def wheelhouse(self) -> Path:
        return self.work / "wheelhouse"

    @property
    def cli_env(self) -> dict[str, str]:
        """The CLI's settings: this coordinator over mutual TLS (an admin's certificate)."""
        return {"LANDLORD_COORDINATOR": self.coordinator,
                "LANDLORD_TLS_CA": f"{AGENT_TLS}/ca.crt",
                "LANDLORD_TLS_CERT": f"{AGENT_TLS}/admin.crt",
                "LANDLORD_TLS_KEY": f"{AGENT_TLS}/admin.key"}

    def cli(self, *args: str) -> Any:
        """The installed `landlord` with JSON output; the last JSON document it printed
        (a followed rollout prints several)."""
        out = self.host.run(["landlord", "-o", "json", *args], env=self.cli_env).stdout
        decoder, found, at = json.JSONDecoder(), None, 0
        while out[at:].strip():
            found, at = decoder.raw_decode(out, len(out) - len(out[at:].lstrip()))
        return found

    def containers(self) -> dict[str, str]:
        """This host's unit containers: id -> State.StartedAt."""
        client = docker.from_env()
        try:
            found = client.api.containers(filters={"label": [CLUSTER_LABEL,
                                                             f"landlord.host={HOST}"]})
            return {c["Id"]: client.api.inspect_container(c["Id"])["State"]["StartedAt"]
                    for c in found}
        finally:
            client.close()

    def logs(self) -> str:
        return "\n".join(f"--- {u}\n{self.host.journal(u)}"
                         for u in ("landlord-coordinator", "landlord-agent"))


def _version_of(pyproject: Path) -> str:
    found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M)
    assert found, pyproject
    return found.group(1)


def _make_certificates(pki: Path) -> None:
    """With `landlord certs`, as an operator makes them: a CA, the coordinator's certificate
    for 127.0.0.1, this host's agent certificate (landlord://host/HOST: the coordinator
    admits the stream only for the host it names) and an admin's (the CLI's)."""
    certs = [str(Path(sys.executable).with_name("landlord")), "certs"]

    def run(*args: str) -> None:
        subprocess.run([*certs, *args], check=True, capture_output=True, timeout=60)

    run("init", str(pki))
    run("issue", "coordinator", "nspawn", "--ca-dir", str(pki), "--ip", "127.0.0.1")
    run("issue", "agent", HOST, "--ca-dir", str(pki))
    run("issue", "admin", "nspawn-ops", "--ca-dir", str(pki))
    # etcd trusts a CA of its own (docs/security.md): etcd's certificate and the
    # coordinator's etcd client certificate; a host's certificate is not accepted there
    etcd_ca = str(pki / "etcd-ca")
    run("init", etcd_ca)
    run("issue-etcd", "nspawn", "--ca-dir", etcd_ca)
    run("issue", "coordinator", "nspawn", "--ca-dir", etcd_ca)
    for source, target in (("ca.pem", "ca.crt"), ("coordinator-nspawn.pem", "server.crt"),
                           ("coordinator-nspawn.key", "server.key"),
                           (f"host-{HOST}.pem", "client.crt"), (f"host-{HOST}.key", "client.key"),
                           ("admin-nspawn-ops.pem", "admin.crt"),
                           ("admin-nspawn-ops.key", "admin.key")):
        (pki / source).rename(pki / target)


def _build_wheelhouses(work: Path) -> str:
    """This tree's wheelhouse and a newer build's (a copy with version <v>.post1); the
    newer version."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "host_install.py"), "wheelhouse",
                    "--dest", str(work / "wheelhouse")], check=True, capture_output=True,
                   timeout=300)
    newer = copy_source(REPO, work)  # work/src: what an operator copies to a host
    pyproject = newer / "pyproject.toml"
    version = _version_of(pyproject) + ".post1"
    pyproject.write_text(re.sub(r'^version = "[^"]+"', f'version = "{version}"',
                                pyproject.read_text(), count=1, flags=re.M))
    subprocess.run([sys.executable, str(newer / "scripts" / "host_install.py"), "wheelhouse",
                    "--dest", str(work / "wheelhouse-newer")], check=True, capture_output=True,
                   timeout=300)
    return version


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    ensure_demo_images()
    rootfs = host_rootfs()
    work = Path(tempfile.mkdtemp(prefix="landlord-nspawn-", dir="/var/tmp"))
    data_dir = Path(f"/var/lib/landlord-e2e-{HOST}")
    slot, slot_lock = _claim_port_slot()
    first_port = 20000 + slot * 1000
    booted: BootedHost | None = None
    registry: LocalRegistry | None = None
    etcd: EtcdProcess | None = None
    try:
        registry = start_registry()
        unique_image(f"landlord/demo-app:{VERSION}", LOCAL_TAG)
        digest = registry.push(LOCAL_TAG, "nspawn-demo", VERSION)
        image = f"{registry.address}/nspawn-demo:{VERSION}"
        pinned = f"{registry.address}/nspawn-demo@{digest}"
        _build_wheelhouses(work)
        _make_certificates(work / "pki")
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        pki = work / "pki"
        etcd = EtcdProcess(work, tls=EtcdTls(
            server=TlsSettings(str(pki / "etcd-ca/ca.pem"), str(pki / "etcd-ca/etcd-nspawn.pem"),
                               str(pki / "etcd-ca/etcd-nspawn.key")),
            client=TlsSettings(str(pki / "etcd-ca/ca.pem"),
                               str(pki / "etcd-ca/coordinator-nspawn.pem"),
                               str(pki / "etcd-ca/coordinator-nspawn.key")))).start()
        binds = [Bind("/run/docker.sock"), Bind("/sys/fs/cgroup", HOST_CGROUP),
                 Bind(str(data_dir)), Bind(str(REPO), read_only=True),
                 Bind(str(work), read_only=True)]
        booted = BootedHost(rootfs, f"landlord-{os.getpid()}", binds)
        booted.boot()
        yield Machine(booted, work, data_dir,
                      f"127.0.0.1:{free_port_on_all(['127.0.0.1'])}",
                      free_port_on_all([ADDRESS]), (first_port, first_port + 999),
                      registry, etcd, image, pinned)
    finally:
        if booted is not None:
            booted.close()  # HAProxy and the daemons go with the machine
        remove_containers([CLUSTER_LABEL])
        if registry is not None:
            registry.close()
        with contextlib.suppress(docker.errors.ImageNotFound):
            _remove_image(LOCAL_TAG)
        # the agent shaped egress on the shared lo: its root qdisc stays after the machine
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True,
                       check=False)
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        slot_lock.close()


def _remove_image(reference: str) -> None:
    client = docker.from_env()
    try:
        client.images.remove(reference)
    finally:
        client.close()


def _toml(values: dict[str, Any]) -> str:
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def test_make_install_from_a_wheelhouse_is_offline_and_idempotent(machine: Machine) -> None:
    host = machine.host
    first = host.run(["make", "-C", str(REPO), "install",
                      f"WHEELHOUSE={machine.wheelhouse}"]).stdout
    assert "no package index" in first and "made release" in first, first
    assert "systemctl daemon-reload" in first, first
    second = host.run(["make", "-C", str(REPO), "install",
                       f"WHEELHOUSE={machine.wheelhouse}"]).stdout
    assert "nothing changed" in second and "made release" not in second, second
    for command in ("landlord", "landlord-agent", "landlord-coordinator"):
        target = host.run(["readlink", "-f", f"/usr/bin/{command}"]).stdout.strip()
        assert target.startswith("/opt/landlord/releases/"), target
    docs = host.sh("ls /usr/share/doc/landlord").split()
    assert {"install.md", "README.md"} <= set(docs), docs
    verify = host.run(["systemd-analyze", "verify", *UNITS], check=False)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr


def test_check_config_names_every_error_and_exits_2(machine: Machine) -> None:
    host = machine.host
    host.write("/tmp/bad-agent.toml", _toml({
        "host_id": "h", "no_such_setting": 1, "monitor_interval": "often",
        "disk_high_watermark": 7.5}))
    host.write("/tmp/bad-coordinator.toml", _toml({  # insecure: no TLS line among these
        "no_such_setting": 1, "etcd_timeout": "slow", "port_range_start": 80,
        "insecure": True}))
    for daemon, path, names in (
            ("landlord-agent", "/tmp/bad-agent.toml",
             ("no_such_setting", "monitor_interval", "disk_high_watermark")),
            ("landlord-coordinator", "/tmp/bad-coordinator.toml",
             ("no_such_setting", "etcd_timeout", "port_range_start"))):
        done = host.run([daemon, "--check-config", "--config", path], check=False)
        assert done.returncode == 2, (daemon, done.returncode, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == len(names), (daemon, lines)
        for name in names:
            assert sum(name in line for line in lines) == 1, (daemon, name, lines)
        assert "Traceback" not in done.stderr


def test_a_bad_config_under_systemd_fails_once_without_a_restart_loop(machine: Machine
                                                                      ) -> None:
    """Exit status 2 (a setting refused) is not restarted (RestartPreventExitStatus=2)."""
    host = machine.host
    host.write("/etc/default/landlord-coordinator", "LANDLORD_COORDINATOR_ETCD_TIMEOUT=slow\n")
    try:
        started = host.run(["systemctl", "start", "landlord-coordinator"], check=False)
        assert started.returncode != 0
        time.sleep(5)  # past RestartSec=2 twice: a restart would have happened by now
        state = host.unit("landlord-coordinator", "ActiveState", "NRestarts",
                          "ExecMainStatus")
        assert state == {"ActiveState": "failed", "NRestarts": "0", "ExecMainStatus": "2"}, \
            state
        assert "etcd_timeout" in host.journal("landlord-coordinator", 20)
    finally:
        host.run(["rm", "-f", "/etc/default/landlord-coordinator"])
        host.run(["systemctl", "reset-failed", "landlord-coordinator"], check=False)


def _configure_and_start(machine: Machine) -> None:
    """Keys and configs, then both daemons. The coordinator's keys go into /etc/landlord/tls
    (root only); its unit hands them over with LoadCredential= (docs/install.md)."""
    host = machine.host
    pki = machine.work / "pki"
    host.sh(f"install -m 0600 {pki}/etcd-ca/ca.pem /etc/landlord/tls/etcd-ca.crt"
            f" && install -m 0600 {pki}/etcd-ca/coordinator-nspawn.pem"
            " /etc/landlord/tls/etcd-client.crt"
            f" && install -m 0600 {pki}/etcd-ca/coordinator-nspawn.key"
            " /etc/landlord/tls/etcd-client.key"
            f" && install -m 0600 {pki}/ca.crt {pki}/server.crt {pki}/server.key /etc/landlord/tls/"
            f" && install -d -m 0700 {AGENT_TLS} && install -m 0600 {pki}/ca.crt"
            f" {pki}/client.crt {pki}/client.key {pki}/admin.crt {pki}/admin.key {AGENT_TLS}/")
    host.write("/etc/landlord/coordinator.toml", _toml({
        **COORDINATOR_SETTINGS, "id": "nspawn-coordinator", "listen": machine.coordinator,
        "etcd_endpoints": [machine.etcd.url], "etcd_prefix": PREFIX,
        "port_range_start": machine.port_range[0], "port_range_end": machine.port_range[1],
        "tls_ca_file": f"{CREDENTIALS}/tls_ca.crt",
        "tls_cert_file": f"{CREDENTIALS}/tls_server.crt",
        "tls_key_file": f"{CREDENTIALS}/tls_server.key",
        "etcd_ca_file": f"{CREDENTIALS}/tls_etcd-ca.crt",
        "etcd_cert_file": f"{CREDENTIALS}/tls_etcd-client.crt",
        "etcd_key_file": f"{CREDENTIALS}/tls_etcd-client.key", "log_format": "text"}))
    host.write("/etc/landlord/agent.toml", _toml({
        "host_id": HOST, "building": "demo", "advertise_address": ADDRESS,
        "coordinators": [machine.coordinator], "data_dir": str(machine.data_dir),
        "cgroup_root": HOST_CGROUP, "labels": [TEST_LABEL, OWNER, CLUSTER_LABEL],
        "stop_grace": 3.0, "startup_probe_interval": 0.1, "monitor_interval": 2.0,
        "tls_ca_file": f"{AGENT_TLS}/ca.crt", "tls_cert_file": f"{AGENT_TLS}/client.crt",
        "tls_key_file": f"{AGENT_TLS}/client.key", "log_format": "text"}))
    # Type=notify: systemctl returns once each daemon said READY=1
    host.run(["systemctl", "start", "landlord-coordinator"])
    host.run(["systemctl", "start", "landlord-agent"])


def _entry_point_answers(machine: Machine) -> bool:
    status, body = http_get(ADDRESS, machine.service_port, timeout=5)
    assert status == 200, (status, body)
    return True


def test_daemons_started_by_systemctl_serve_a_deployed_unit(machine: Machine) -> None:
    _configure_and_start(machine)
    host = machine.host
    for unit in ("landlord-coordinator", "landlord-agent"):
        state = host.unit(unit, "ActiveState", "SubState", "Type", "NRestarts")
        assert state == {"ActiveState": "active", "SubState": "running", "Type": "notify",
                         "NRestarts": "0"}, (unit, state, machine.logs())

    def registered() -> dict[str, Any]:
        hosts = machine.cli("hosts", "list")["hosts"]
        return next(h for h in hosts if h["host_id"] == HOST and h["status"] == "alive")

    found = eventually(registered, timeout=30, interval=0.5, message=f"{HOST} registered")
    # the coordinator runs as a dynamic user and reads keys only root can read, through
    # its credentials; a client without TLS is refused
    pid = host.unit("landlord-coordinator", "MainPID")["MainPID"]
    assert host.sh(f"ps -o uid= -p {pid}").strip() not in ("", "0")
    assert host.sh("stat -c %U:%a /etc/landlord/tls/server.key").strip() == "root:600"
    plain = host.run(["landlord", "hosts", "list"], check=False,
                     env={"LANDLORD_COORDINATOR": machine.coordinator})
    assert plain.returncode != 0, plain.stdout
    # every limit, egress bandwidth included (tc and the bpf classifier work in there)
    assert set(found["enforceable"]) == {"cpu", "memory", "storage", "network"}, found
    published = machine.cli("units", "publish", APARTMENT_UNIT, VERSION, "--image",
                            machine.image, "--service-port", str(machine.service_port),
                            "--health-path", "/healthz", "--cpu", "100m", "--memory", "64Mi",
                            "--feature", "first")
    # the coordinator resolved the tag through the registry (no host holds it by that name)
    assert published["version"]["image_id"] == machine.pinned, published
    # gone from this Docker: the agent must pull it from the registry, by digest
    machine.registry.forget_locally(machine.pinned)
    _remove_image(LOCAL_TAG)
    machine.cli("deploy", APARTMENT_UNIT, VERSION, "--building", "demo", "--replicas", "2",
                "--wait")
    eventually(lambda: _entry_point_answers(machine), timeout=30, interval=0.2,
               message="the unit's entry point answers")
    assert len(machine.containers()) == 2
    client = docker.from_env()
    try:
        for container in client.containers.list(filters={"label": CLUSTER_LABEL}):
            assert container.attrs["Config"]["Image"] == machine.pinned
    finally:
        client.close()
    assert "event image.pulled" in host.journal("landlord-agent", 300)


def _under_load(machine: Machine) -> LoadGenerator:
    load = LoadGenerator([ADDRESS], machine.service_port, pause=0.01, clock=time.monotonic)
    return load.start(max_seconds=240)


def _after_load(load: LoadGenerator, minimum: int) -> None:
    load.close()
    answers = load.answers()
    bad = failed(answers)
    print(f"load on the entry point: {len(answers)} requests, {len(bad)} failed")
    assert not bad and len(answers) >= minimum, (len(answers), bad[:5])


def test_agent_restart_under_load_restarts_no_container(machine: Machine) -> None:
    host = machine.host
    before = machine.containers()
    pid = host.unit("landlord-agent", "MainPID")["MainPID"]
    load = _under_load(machine)
    try:
        eventually(lambda: len(load.answers()) >= 20, timeout=30)
        host.run(["systemctl", "restart", "landlord-agent"])
        state = host.unit("landlord-agent", "MainPID", "ActiveState", "StatusText")
        assert state["MainPID"] != pid and state["ActiveState"] == "active", state
        assert state["StatusText"] == "supervising 2 instances", state
        settled = len(load.answers())
        eventually(lambda: len(load.answers()) >= settled + 50, timeout=30)
    finally:
        _after_load(load, 70)
    assert machine.containers() == before


def test_hung_coordinator_is_restarted_by_the_watchdog(machine: Machine) -> None:
    host = machine.host
    dropin = "/etc/systemd/system/landlord-coordinator.service.d/50-test-watchdog.conf"
    host.write(dropin, "[Service]\nWatchdogSec=2\nTimeoutAbortSec=2\n")
    host.run(["systemctl", "daemon-reload"])
    try:
        host.run(["systemctl", "restart", "landlord-coordinator"])
        before = host.unit("landlord-coordinator", "MainPID", "NRestarts")
        time.sleep(5)  # 2.5 watchdog periods: a coordinator that pings stays up
        assert host.unit("landlord-coordinator", "MainPID", "NRestarts") == before, \
            machine.logs()
        host.run(["kill", "-STOP", before["MainPID"]])

        def restarted() -> dict[str, str]:
            now = host.unit("landlord-coordinator", "MainPID", "NRestarts", "ActiveState")
            assert int(now["NRestarts"]) > int(before["NRestarts"]), now
            assert now["MainPID"] not in ("0", before["MainPID"]), now
            assert now["ActiveState"] == "active", now
            return now

        eventually(restarted, timeout=30, interval=0.5, message="watchdog restart")
        assert "Watchdog timeout" in host.journal("landlord-coordinator", 200)
    finally:
        host.run(["rm", "-f", dropin])
        host.run(["systemctl", "daemon-reload"])
        host.run(["systemctl", "restart", "landlord-coordinator"])


def test_upgrading_the_installed_build_restarts_no_container(machine: Machine) -> None:
    host = machine.host
    newer = _version_of(machine.work / "src" / "pyproject.toml")
    before = machine.containers()
    pids = {u: host.unit(u, "MainPID")["MainPID"]
            for u in ("landlord-agent", "landlord-coordinator")}
    load = _under_load(machine)
    try:
        eventually(lambda: len(load.answers()) >= 20, timeout=30)
        out = host.run(["make", "-C", str(machine.work / "src"), "install",
                        f"WHEELHOUSE={machine.work / 'wheelhouse-newer'}"]).stdout
        assert f"-> {newer}-" in out and "systemctl restart landlord-agent" in out, out
        # the installer restarts nothing by itself
        assert {u: host.unit(u, "MainPID")["MainPID"] for u in pids} == pids
        host.run(["systemctl", "restart", "landlord-agent"])
        host.run(["systemctl", "restart", "landlord-coordinator"])
        release = host.run(["readlink", "/opt/landlord/current"]).stdout.strip()
        for unit in pids:
            pid = host.unit(unit, "MainPID")["MainPID"]
            cmdline = host.run(["cat", f"/proc/{pid}/cmdline"]).stdout
            assert release in cmdline, (unit, release, cmdline)

        def agent_upgraded() -> bool:
            hosts = machine.cli("hosts", "list")["hosts"]
            return any(h["host_id"] == HOST and h["agent_version"] == newer
                       and h["status"] == "alive" for h in hosts)

        eventually(agent_upgraded, timeout=30, interval=0.5, message="agent reports " + newer)
        settled = len(load.answers())
        eventually(lambda: len(load.answers()) >= settled + 50, timeout=30)
    finally:
        _after_load(load, 70)
    assert machine.containers() == before


def test_uninstall_removes_the_install_and_leaves_the_workloads(machine: Machine) -> None:
    host = machine.host
    before = machine.containers()
    out = host.run(["make", "-C", str(REPO), "uninstall"]).stdout
    assert "stopped and disabled landlord-agent.service" in out, out
    left = host.run(["ls", "/usr/bin/landlord", "/usr/bin/landlord-agent", "/opt/landlord",
                     *UNITS, "/usr/share/doc/landlord"], check=False)
    assert left.returncode != 0 and left.stdout == "", left.stdout
    assert host.run(["test", "-f", "/etc/landlord/agent.toml"], check=False).returncode == 0
    assert machine.containers() == before
    eventually(lambda: _entry_point_answers(machine), timeout=5)  # HAProxy still serves
