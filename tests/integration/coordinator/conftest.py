"""Private etcd processes for the coordinator's integration tests."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from local_cluster.etcd import EtcdProcess
from local_cluster.processes import free_port

from common.gen.landlord.v1 import admin_pb2_grpc
from coordinator.app import Coordinator
from coordinator.config import CoordinatorConfig
from coordinator.state.store import EtcdStore


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """One private etcd per test module; tests keep apart by key prefix."""
    process = EtcdProcess(Path(tmp_path_factory.mktemp("etcd")))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def prefix() -> str:
    return f"/t-{secrets.token_hex(4)}"


@pytest.fixture
async def store(etcd: EtcdProcess, prefix: str) -> AsyncIterator[EtcdStore]:
    s = EtcdStore([etcd.endpoint], timeout=3.0)
    try:
        yield s
    finally:
        if etcd.running:
            await s.delete_prefix(prefix + "/")
        await s.close()


def coordinator_config(
    etcd: EtcdProcess, prefix: str, name: str = "c1", **overrides: object
) -> CoordinatorConfig:
    values: dict[str, object] = {
        "id": name,
        "listen": f"127.0.0.1:{free_port()}",
        "etcd_endpoints": (etcd.endpoint,),
        "etcd_prefix": prefix,
        "leader_lease_ttl": 2,
        "heartbeat_interval": 0.5,
        "liveness_grace": 1.0,
        "report_interval": 0.05,
        "shutdown_grace": 1.0,
        "etcd_timeout": 2.0,
        "metrics_listen": "127.0.0.1:0",  # any free port: tests run several coordinators
        # these private etcds and most tests here are plain text on loopback; the mTLS tests
        # (test_coord_mtls.py, test_etcd_tls.py) set the TLS files
        "insecure": True,
    }
    values.update(overrides)
    return CoordinatorConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def coordinator(etcd: EtcdProcess, prefix: str) -> AsyncIterator[Coordinator]:
    """One in-process coordinator that leads, on a private prefix."""
    c = Coordinator(coordinator_config(etcd, prefix))
    await c.start()
    try:
        for _ in range(100):
            if c.leadership.is_leader:
                break
            await asyncio.sleep(0.05)
        yield c
    finally:
        await c.stop()
        cleanup = EtcdStore([etcd.endpoint])
        await cleanup.delete_prefix(prefix + "/")
        await cleanup.close()


@pytest.fixture
async def admin(coordinator: Coordinator) -> AsyncIterator[admin_pb2_grpc.AdminStub]:
    channel = grpc.aio.insecure_channel(coordinator.config.listen)
    try:
        yield admin_pb2_grpc.AdminStub(channel)
    finally:
        await channel.close()
