"""Bounded inputs against a real in-process coordinator over gRPC: the requests that froze
or crashed it in the audit are refused with INVALID_ARGUMENT at once, with a short error
text, and leave etcd as it was."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.input_bounds import request_too_large
from coordinator.app import Coordinator
from coordinator.state.store import EtcdStore
from tests.integration.coordinator.agents import LocalAgent, start_agent
from tests.support import async_eventually

HUGE = 2**31 - 1
QUICK_S = 2.0
"""Each refusal must come back within this (the audit measured 21 s to 18 minutes)."""


def spec(**overrides: Any) -> types_pb2.UnitSpec:
    values: dict[str, Any] = {"apartment": "shop", "unit": "web", "image": "demo:1",
                              "service_port": 9000,
                              "resources": types_pb2.Resources(cpu_millis=100,
                                                               memory_bytes=64 << 20)}
    values.update(overrides)
    return types_pb2.UnitSpec(**values)


def publish_request(version: str = "1.0.0", **overrides: Any) -> admin_pb2.PublishVersionRequest:
    return admin_pb2.PublishVersionRequest(
        spec=spec(**overrides), version=version,
        changes=types_pb2.ChangeSet(features=["first"]))


def blue_green(version: str, build: Callable[[admin_pb2.DeployRequest], None]
               ) -> admin_pb2.DeployRequest:
    request = admin_pb2.DeployRequest(apartment="shop", unit="web", version=version,
                                      replicas=1, strategy=types_pb2.STRATEGY_BLUE_GREEN)
    build(request)
    return request


STATE = ("units", "versions", "rollouts", "instances", "alloc", "routes")
"""What a deploy or publish would write (hosts' liveness and audit events move anyway)."""


async def etcd_keys(coordinator: Coordinator) -> dict[str, bytes]:
    store = EtcdStore(list(coordinator.config.etcd_endpoints))
    try:
        found: dict[str, bytes] = {}
        for kind in STATE:
            entries, _ = await store.list_prefix(f"{coordinator.config.etcd_prefix}/{kind}/")
            found.update((e.key, e.value) for e in entries)
        return found
    finally:
        await store.close()


async def refused(call: Any, request: Any) -> str:
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request, timeout=30)
    elapsed = time.perf_counter() - started
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        err.value.code(), (err.value.details() or "")[:300])
    assert elapsed < QUICK_S, f"refused after {elapsed:.1f} s"
    details = err.value.details() or ""
    assert len(details) < 1024, f"the error echoes {len(details)} characters"
    return details


@pytest.fixture
async def published(coordinator: Coordinator, admin: Any) -> AsyncIterator[LocalAgent]:
    """One host and shop/web 1.0.0 and 1.1.0 published, so a deploy would go all the way
    to placement."""
    agent = start_agent([coordinator.config.listen], "h1", "127.0.0.2")
    try:
        await async_eventually(lambda: _has_host(admin), timeout=10, message="h1 registered")
        await admin.PublishVersion(publish_request())
        await admin.PublishVersion(publish_request("1.1.0", env={"BUILD": "2"}))
        yield agent
    finally:
        await agent.stop()


async def _has_host(admin: Any) -> bool:
    return bool((await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts)


def _gradual(r: admin_pb2.DeployRequest) -> None:
    r.blue_green.switch_mode = types_pb2.SWITCH_MODE_GRADUAL
    r.blue_green.gradual_steps = HUGE


def _performance(r: admin_pb2.DeployRequest) -> None:
    r.blue_green.performance_requests = HUGE
    r.blue_green.max_latency_p95.FromMilliseconds(500)


def _replicas(r: admin_pb2.DeployRequest) -> None:
    r.replicas = HUGE


def _check_path(r: admin_pb2.DeployRequest) -> None:
    r.blue_green.checks.add().http.path = "/ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /v3/kv/put"


@pytest.mark.parametrize(("build", "words"), [
    (_gradual, "gradual_steps"), (_performance, "performance_requests"),
    (_replicas, "replicas"), (_check_path, "check path"),
])
async def test_a_hostile_deploy_is_refused_at_once_and_changes_nothing(
        coordinator: Coordinator, admin: Any, published: LocalAgent,
        build: Callable[[admin_pb2.DeployRequest], None], words: str) -> None:
    before = await etcd_keys(coordinator)
    details = await refused(admin.Deploy, blue_green("1.1.0", build))
    assert words in details, details
    assert await etcd_keys(coordinator) == before
    started = time.perf_counter()  # and the coordinator still answers at once
    await admin.ListHosts(admin_pb2.ListHostsRequest(), timeout=5)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(("overrides", "words"), [
    ({"health": types_pb2.HealthCheck(path="/ok\r\nX: 1")}, "health_check.path"),
    ({"health": types_pb2.HealthCheck(path="/ok'")}, "health_check.path"),
    ({"env": {"A": "x\ny"}}, "env A"),
    ({"env": {"A": "x" * 1_400_000}}, "env A"),
    ({"env": {"A": "x" * 3_000_000}}, "env A"),  # past 2 MiB: was UNAVAILABLE
    ({"service_port": 2379}, "etcd"),
    ({"service_port": 22}, "ssh"),
    ({"command": ["x"] * 50_000}, "50000 arguments"),
    ({"resources": types_pb2.Resources(cpu_millis=10**15)}, "resources.cpu"),
])
async def test_a_spec_the_runtime_would_reject_is_refused_on_publish(
        coordinator: Coordinator, admin: Any, published: LocalAgent,
        overrides: dict[str, Any], words: str) -> None:
    before = await etcd_keys(coordinator)
    details = await refused(admin.PublishVersion, publish_request("1.2.0", **overrides))
    assert words in details, details
    assert await etcd_keys(coordinator) == before


async def test_oversized_metadata_and_changes_are_refused_on_publish(
        coordinator: Coordinator, admin: Any, published: LocalAgent) -> None:
    """A version's record must fit in one etcd request (1.5 MiB): past it the publish
    used to come back UNAVAILABLE, which looks retryable."""
    before = await etcd_keys(coordinator)
    request = publish_request("1.2.0")
    request.metadata["notes"] = "x" * 2_000_000
    assert "metadata" in await refused(admin.PublishVersion, request)
    request = publish_request("1.2.0")
    request.changes.features.extend(["x" * 500] * 5000)
    assert "changes.features" in await refused(admin.PublishVersion, request)
    assert await etcd_keys(coordinator) == before


@pytest.mark.parametrize("size", [(4 << 20) + 1, 5 << 20, 33 << 20],
                         ids=["4MiB+1", "5MiB", "33MiB"])
async def test_a_request_past_4_mib_is_refused_by_grpc_with_its_size(
        coordinator: Coordinator, admin: Any, size: int) -> None:
    """The coordinator's gRPC receive limit is MAX_ADMIN_REQUEST_BYTES: grpc refuses a
    larger message from its length prefix with RESOURCE_EXHAUSTED, naming its size and the
    limit, before anything holds it (documented in docs/security.md); the CLI says it as
    ``request_too_large``. Anything below it that breaks a bound gets INVALID_ARGUMENT
    from the domain checks (above)."""
    request = admin_pb2.ListVersionsRequest(apartment="shop", unit="w" * size)
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.ListVersions(request, timeout=30)
    assert time.perf_counter() - started < QUICK_S
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    length = request.ByteSize()
    assert request_too_large(err.value.details() or "") == (
        f"request too large: {length} bytes, limit 4 MiB")
    # just under the limit, the servicer's own checks answer
    under = publish_request(env={"A": "x" * ((4 << 20) - 1024)})
    assert under.ByteSize() <= 4 << 20
    assert "env" in await refused(admin.PublishVersion, under)


async def test_a_small_admin_request_past_256_kib_is_refused_unparsed(
        coordinator: Coordinator, admin: Any) -> None:
    """Only PublishVersion and Deploy take up to 4 MiB: a 300 KiB ListVersions is refused
    INVALID_ARGUMENT before it is parsed (64 of 4 MB took the coordinator to 1.1 GB), and
    counted in the admin call metrics."""
    request = admin_pb2.ListVersionsRequest(apartment="shop", unit="w" * (300 << 10))
    details = await refused(admin.ListVersions, request)
    assert f"request too large: {request.ByteSize()} bytes, limit 256 KiB" in details
    assert coordinator.metrics.registry.get_sample_value(
        "landlord_admin_calls_total",
        {"method": "ListVersions", "code": "INVALID_ARGUMENT"}) == 1.0
