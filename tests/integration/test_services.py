"""scripts/services.sh: installs and starts real dockerd, etcd and registry, idempotently."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "scripts" / "services.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _etcd_health(addr: str) -> bool:
    with urllib.request.urlopen(f"http://{addr}/health", timeout=2) as resp:
        return bool(json.load(resp)["health"] == "true")


def _registry_answers(addr: str) -> bool:
    with urllib.request.urlopen(f"http://{addr}/v2/", timeout=2) as resp:
        return bool(resp.headers.get("Docker-Distribution-Api-Version") == "registry/2.0")


def test_dockerd_answers() -> None:
    client = docker.from_env(timeout=10)
    try:
        assert client.ping()
        assert client.version()["ApiVersion"]
    finally:
        client.close()


def test_shared_etcd_answers() -> None:
    assert _etcd_health("127.0.0.1:2379")


def test_shared_registry_answers() -> None:
    assert _registry_answers("127.0.0.1:5000")


@pytest.fixture
def private_run(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env["LANDLORD_RUN_DIR"] = str(tmp_path / "run")
    env["LANDLORD_ETCD_CLIENT"] = f"127.0.0.1:{_free_port()}"
    env["LANDLORD_ETCD_PEER"] = f"127.0.0.1:{_free_port()}"
    env["LANDLORD_REGISTRY"] = f"127.0.0.1:{_free_port()}"
    yield env
    subprocess.run([str(SERVICES), "down"], env=env, capture_output=True, timeout=60)


def test_up_is_idempotent_and_down_stops_only_what_it_started(
    private_run: dict[str, str],
) -> None:
    env = private_run
    client_addr = env["LANDLORD_ETCD_CLIENT"]
    first = subprocess.run(
        [str(SERVICES), "up"], env=env, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert "starting etcd" in first.stdout
    assert "starting docker-registry" in first.stdout
    assert _etcd_health(client_addr)
    assert _registry_answers(env["LANDLORD_REGISTRY"])
    run_dir = Path(env["LANDLORD_RUN_DIR"])
    assert f"rootdirectory: {run_dir / 'registry'}" in (run_dir / "registry.yml").read_text()
    pid_file = run_dir / "pids" / "etcd.pid"
    pid = int(pid_file.read_text())
    registry_pid = int((run_dir / "pids" / "registry.pid").read_text())
    status = subprocess.run([str(SERVICES), "status"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert f"registry: running (started by these scripts, pid {registry_pid})" in status.stdout

    # A second `up` finds everything running and starts nothing.
    second = subprocess.run(
        [str(SERVICES), "up"], env=env, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0, second.stderr
    assert "starting" not in second.stdout
    assert int(pid_file.read_text()) == pid
    assert int((run_dir / "pids" / "registry.pid").read_text()) == registry_pid

    # dockerd was already running, so this run dir did not start it: `down`
    # stops this etcd and leaves dockerd (and the shared etcd) alone.
    assert not (Path(env["LANDLORD_RUN_DIR"]) / "pids" / "dockerd.pid").exists()
    down = subprocess.run(
        [str(SERVICES), "down"], env=env, capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 0, down.stderr

    def gone(process: int) -> bool:
        try:
            os.kill(process, 0)
        except ProcessLookupError:
            return True
        return False

    eventually(lambda: gone(pid), timeout=15, message="private etcd stopped")
    eventually(lambda: gone(registry_pid), timeout=15, message="private registry stopped")
    status = subprocess.run([str(SERVICES), "status"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert "registry: not running" in status.stdout
    test_dockerd_answers()
    assert _etcd_health("127.0.0.1:2379")
