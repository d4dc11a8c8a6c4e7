"""The demo image on real Docker: host networking on loopback addresses, knobs, state."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import docker
import pytest
from docker.models.containers import Container
from local_cluster.images import DEMO_REGISTRY, demo_image

from common.image_refs import parse_image_ref
from coordinator.images_client import RegistryClient
from tests.support import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-demo-image.sh"
VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
TEST_LABELS = {"landlord.test": "1", "landlord.test.suite": "demo-app"}


@dataclass(frozen=True)
class DemoContainer:
    container: Container
    host: str
    port: int

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def wait_healthy(self) -> None:
        eventually(lambda: self.get("/healthz")[0] == 200, timeout=20,
                   message=f"{self.container.name} answers /healthz")


class StartDemo(Protocol):
    def __call__(self, version: str, host: str = ..., env: dict[str, str] | None = ...,
                 state_dir: Path | None = ..., wait: bool = ...) -> DemoContainer: ...


def _remove_labelled(client: docker.DockerClient) -> None:
    filters = {"label": [f"{k}={v}" for k, v in TEST_LABELS.items()]}
    for leftover in client.containers.list(all=True, filters=filters):
        leftover.remove(force=True)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def demo_images() -> tuple[str, ...]:
    subprocess.run([str(BUILD_SCRIPT), *VERSIONS], check=True, timeout=1200)
    return VERSIONS


@pytest.fixture(scope="session")
def docker_client(demo_images: tuple[str, ...]) -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    _remove_labelled(client)
    yield client
    _remove_labelled(client)
    client.close()


@pytest.fixture
def start_demo(docker_client: docker.DockerClient) -> Iterator[StartDemo]:
    started: list[Container] = []

    def start(version: str, host: str = "127.0.0.2", env: dict[str, str] | None = None,
              state_dir: Path | None = None, wait: bool = True) -> DemoContainer:
        port = _free_port(host)
        environment = {"BIND": host, "PORT": str(port), **(env or {})}
        volumes = {}
        if state_dir is not None:
            environment["STATE_DIR"] = "/state"
            volumes[str(state_dir)] = {"bind": "/state", "mode": "rw"}
        container = docker_client.containers.run(
            f"landlord/demo-app:{version}", detach=True, network_mode="host",
            environment=environment, volumes=volumes, labels=TEST_LABELS,
        )
        started.append(container)
        demo = DemoContainer(container, host, port)
        if wait:
            demo.wait_healthy()
        return demo

    yield start
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_image_answers_version_and_health(start_demo: StartDemo, version: str,
                                          docker_client: docker.DockerClient) -> None:
    image = docker_client.images.get(f"landlord/demo-app:{version}")
    assert image.labels["org.opencontainers.image.version"] == version
    demo = start_demo(version, host="127.0.0.3", env={"HOST_ID": "host-3", "INSTANCE_ID": "i-1"})
    status, body = demo.get("/")
    assert status == 200
    assert body == {"version": version, "host": "host-3", "instance": "i-1", "count": 1}
    assert demo.get("/healthz") == (200, {"status": "ok", "version": version})


def test_build_script_is_idempotent(demo_images: tuple[str, ...],
                                    docker_client: docker.DockerClient) -> None:
    before = {v: docker_client.images.get(f"landlord/demo-app:{v}").id for v in demo_images}
    again = subprocess.run([str(BUILD_SCRIPT), *demo_images], check=True, timeout=120,
                           capture_output=True, text=True)
    after = {v: docker_client.images.get(f"landlord/demo-app:{v}").id for v in demo_images}
    assert after == before
    assert "pushing" not in again.stderr  # the registry already has every tag


def test_build_script_pushed_each_version_to_the_registry(
        demo_images: tuple[str, ...], docker_client: docker.DockerClient) -> None:
    client = RegistryClient()
    for version in demo_images:
        image = docker_client.images.get(f"landlord/demo-app:{version}")
        digest = client.resolve_blocking(parse_image_ref(demo_image(version)))
        assert f"{DEMO_REGISTRY}/landlord/demo-app@{digest}" in image.attrs["RepoDigests"]
        assert docker_client.images.get(
            f"{DEMO_REGISTRY}/landlord/demo-app@{digest}").id == image.id


def test_error_rate_one_fails_every_root_request(start_demo: StartDemo) -> None:
    demo = start_demo("1.0.0", env={"ERROR_RATE": "1"})
    statuses = [demo.get("/")[0] for _ in range(20)]
    assert statuses == [500] * 20
    assert demo.get("/healthz")[0] == 200


def test_error_rate_fraction_is_roughly_respected(start_demo: StartDemo) -> None:
    demo = start_demo("1.1.0", env={"ERROR_RATE": "0.3"})
    statuses = [demo.get("/")[0] for _ in range(300)]
    assert set(statuses) <= {200, 500}
    fraction = statuses.count(500) / len(statuses)
    assert 0.2 < fraction < 0.4, fraction  # mean 0.3, sd 0.026
    assert all(demo.get("/healthz")[0] == 200 for _ in range(20))


def test_latency_is_added_to_root(start_demo: StartDemo) -> None:
    demo = start_demo("1.0.0", env={"LATENCY_MS": "300"})
    started = time.monotonic()
    assert demo.get("/")[0] == 200
    assert time.monotonic() - started >= 0.3


def test_state_survives_container_replacement(start_demo: StartDemo, tmp_path: Path) -> None:
    first = start_demo("1.0.0", host="127.0.0.2", state_dir=tmp_path)
    assert [first.get("/")[1]["count"] for _ in range(5)] == [1, 2, 3, 4, 5]
    first.container.remove(force=True)
    second = start_demo("2.0.0", host="127.0.0.4", state_dir=tmp_path)
    assert second.get("/state")[1]["count"] == 5
    status, body = second.get("/")
    assert (status, body["version"], body["count"]) == (200, "2.0.0", 6)
    assert json.loads((tmp_path / "counter.json").read_text())["updated_by"] == "2.0.0"


def test_crash_after_exits_non_zero(start_demo: StartDemo) -> None:
    demo = start_demo("1.0.0", env={"CRASH_AFTER_S": "1"}, wait=False)

    def exited() -> dict[str, Any]:
        demo.container.reload()
        state: dict[str, Any] = demo.container.attrs["State"]
        assert state["Status"] == "exited"
        return state

    state = eventually(exited, timeout=20, message="container exits")
    assert state["ExitCode"] == 3  # non-zero: the crash status of app.py


def test_sigterm_stops_gracefully_with_exit_0(start_demo: StartDemo) -> None:
    demo = start_demo("1.1.0")
    assert demo.get("/")[0] == 200
    demo.container.stop(timeout=10)
    demo.container.reload()
    assert demo.container.attrs["State"]["ExitCode"] == 0
    assert b"SIGTERM received" in demo.container.logs()
