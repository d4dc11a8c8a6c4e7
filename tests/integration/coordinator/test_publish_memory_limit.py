"""The audit's "40 concurrent 30 MB publishes took the coordinator to 1.45 GB", lean: a
real coordinator process (its own etcd) gets 10 concurrent 30 MB publishes. grpc used to
receive each whole message before any limit ran (main measured +2.2 GB for 40); the
coordinator's 4 MiB receive limit now refuses each from its length prefix, so they are
all RESOURCE_EXHAUSTED with their size, the coordinator's RSS grows far less than their
286 MiB, and ListHosts is answered meanwhile (bench/publish_memory.py: the full figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from local_cluster.daemons import CoordinatorProcess
from local_cluster.etcd import EtcdProcess
from local_cluster.processes import wait_for

from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.input_bounds import request_too_large

PUBLISHES = 10
SIZE = 30_000_000
GROWTH_LIMIT = 100 << 20
"""Bytes the coordinator's RSS may grow by while refusing them (their total is 286 MiB)."""


@pytest.fixture
def coordinator(etcd: EtcdProcess, prefix: str, tmp_path: Path
                ) -> Iterator[CoordinatorProcess]:
    process = CoordinatorProcess(tmp_path, "lm-publish", etcd.endpoint, prefix)
    try:
        process.start()
        wait_for(lambda: process.leader_info().this_is_leader, 30, "lm-publish leads")
        yield process
    finally:
        process.stop(10)


def sample_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            out.append(process.memory_info().rss)
        time.sleep(0.01)


async def test_concurrent_oversized_publishes_are_refused_unread(
        coordinator: CoordinatorProcess) -> None:
    request = admin_pb2.PublishVersionRequest(version="1.0.0", metadata={"blob": "x" * SIZE})
    body = request.SerializeToString()
    async with grpc.aio.insecure_channel(
            coordinator.address,
            options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        await admin.ListHosts(admin_pb2.ListHostsRequest(), timeout=5)
        before = psutil.Process(coordinator.pid).memory_info().rss
        samples: list[int] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(coordinator.pid, stop, samples))
        sampler.start()
        publish = channel.unary_unary("/landlord.v1.Admin/PublishVersion")

        async def listed_in() -> float:
            await asyncio.sleep(0.05)
            started = time.monotonic()
            await admin.ListHosts(admin_pb2.ListHostsRequest(), timeout=5)
            return time.monotonic() - started

        try:
            results = await asyncio.gather(
                *(publish(body, timeout=60) for _ in range(PUBLISHES)), listed_in(),
                return_exceptions=True)
        finally:
            stop.set()
            sampler.join()
    *refusals, took = results
    growth = max(samples, default=before) - before
    assert growth < GROWTH_LIMIT, f"RSS grew by {growth >> 20} MiB"
    assert isinstance(took, float) and took < 1.0, took
    for refusal in refusals:
        assert isinstance(refusal, grpc.aio.AioRpcError), refusal
        assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.details()
        assert request_too_large(refusal.details() or "") == (
            f"request too large: {len(body)} bytes, limit 4 MiB")
    assert coordinator.running
