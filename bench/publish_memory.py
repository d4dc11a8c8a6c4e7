"""Publish memory: do large concurrent publishes make the coordinator large?

Starts a private etcd and one coordinator process over mutual TLS (as local_cluster does),
then fires, from one admin identity on one channel, ``--count`` (40) concurrent
PublishVersion calls of ``--mb`` (30) MB each, then as many of 3.9 MB (just under the
4 MiB bound), then 64 (``max_calls_per_identity``) concurrent ListVersions of 4 MB
(refused unparsed past 256 KiB), and prints the answers and the coordinator's peak RSS
(sampled every 20 ms) next to the target. The audit saw 1.45 GB for 40 x 30 MB; grpc used
to read every waiting call's whole message before any limit ran. A figure, not a test.

``--bin-dir`` starts the coordinator from another install (e.g. an older checkout's
``.venv/bin``) to compare.

Usage: python bench/publish_memory.py [--count 40] [--mb 30] [--bin-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # local_cluster

from local_cluster.cluster import ControlPlane
from local_cluster.daemons import BIN

from common.gen.landlord.v1 import admin_pb2
from common.transport import TlsSettings, create_channel

PUBLISH = "/landlord.v1.Admin/PublishVersion"
LIST_VERSIONS = "/landlord.v1.Admin/ListVersions"
TARGET_MIB = 300
UNDER_BOUND = 3_900_000
"""Bytes of a publish just under the 4 MiB bound (MAX_ADMIN_REQUEST_BYTES)."""


def rss_peak(pid: int, stop: threading.Event, out: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            out.append(process.memory_info().rss)
        time.sleep(0.02)


async def publishes(address: str, tls: TlsSettings, pid: int, count: int, size: int,
                    method: str = PUBLISH) -> str:
    """``count`` concurrent publishes (or ListVersions, ``LIST_VERSIONS``) of ``size``
    bytes: the answers, and the coordinator's RSS before and at its peak, against
    ``TARGET_MIB``."""
    request: Any = (admin_pb2.PublishVersionRequest(version="1.0.0", metadata={"blob": "x" * size})
                    if method == PUBLISH else
                    admin_pb2.ListVersionsRequest(apartment="shop", unit="x" * size))
    body = request.SerializeToString()
    samples: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=rss_peak, args=(pid, stop, samples))
    before = psutil.Process(pid).memory_info().rss
    sampler.start()
    codes: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    async with create_channel(address, tls) as channel:
        call = channel.unary_unary(method)

        async def one() -> None:
            try:
                await call(body, timeout=120)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1

        await asyncio.gather(*(one() for _ in range(count)))
    took = time.monotonic() - started
    stop.set()
    sampler.join()
    peak = max(samples, default=before) / 2**20
    statuses = ", ".join(f"{n} {code}" for code, n in codes.most_common())
    verdict = "meets" if peak < TARGET_MIB else "MISSES"
    what = "publishes" if method == PUBLISH else method.rsplit("/", 1)[1]
    return (f"{count} concurrent {size / 1e6:.1f} MB {what} in {took:.1f} s: {statuses}; "
            f"coordinator RSS {before / 2**20:.0f} MiB before, peak {peak:.0f} MiB ({verdict} "
            f"the target < {TARGET_MIB} MiB; the audit saw 1.45 GB for 40 x 30 MB)")


async def run(args: argparse.Namespace) -> None:
    plane = ControlPlane("publish-memory", tls=True)
    try:
        plane.start(bin_dir=Path(args.bin_dir) if args.bin_dir else BIN)
        coordinator = plane.coordinator
        admin = plane.client_tls
        assert admin is not None
        print(f"coordinator from {args.bin_dir or BIN}", flush=True)
        for size in (args.mb * 1_000_000, UNDER_BOUND):
            print(await publishes(coordinator.address, admin, coordinator.pid, args.count,
                                  size), flush=True)
            await asyncio.sleep(1.0)
        print(await publishes(coordinator.address, admin, coordinator.pid, 64, 4_000_000,
                              LIST_VERSIONS), flush=True)
        if not coordinator.running:
            print(f"the coordinator exited:\n{coordinator.log_tail()}")
    finally:
        plane.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--mb", type=int, default=30, help="MB of each large publish")
    parser.add_argument("--bin-dir", default="",
                        help="where landlord-coordinator is (default: this install's)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
