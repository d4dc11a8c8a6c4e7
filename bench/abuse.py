"""Abuse: does a hostile or broken client make the coordinator slow for everyone else?

Starts a private etcd and one coordinator process over mutual TLS (as local_cluster does),
with the coordinator's descriptor limit set to the ``LimitNOFILE`` of
systemd/landlord-coordinator.service (prlimit; capped at this machine's hard limit, said
when it is), then holds, all at once:

- half-open connections (``--half-open``, 1,100): TCP connections that send nothing or part
  of a TLS ClientHello; each is opened again as soon as the coordinator closes it;
- idle streams (``--idle-streams``, 500): ``StreamEvents(follow=True)`` spread over viewer
  identities (50 each), plus one identity that asks for 100 (over its cap: refused);
- slow clients (``--slow``, 20 of each kind): a publish trickled one byte at a time over
  hand-written HTTP/2 frames (by an admin identity of their own), and a client that asks
  for events and never reads;

and meanwhile measures admin ``ListHosts`` (one channel, and a new connection per call as
`landlord hosts list` makes) from a separate process, p50/p99 against the target
"p99 < 100 ms", and whether another admin's publishes get a turn. Then 40 concurrent
30 MB PublishVersion calls and the coordinator's peak RSS (the audit saw 1.45 GB).
Prints what else runs on the machine first. A figure, not a test.

Usage: python bench/abuse.py [--half-open 1100] [--idle-streams 500] [--slow 20]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import multiprocessing as mp
import os
import re
import ssl
import statistics
import struct
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

from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.transport import TlsSettings, create_channel

ROOT = Path(__file__).resolve().parents[1]
UNIT_FILE = ROOT / "systemd" / "landlord-coordinator.service"
TARGET_P99_MS = 100.0
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
PUBLISH = "/landlord.v1.Admin/PublishVersion"
STREAMS_PER_VIEWER = 50


def installed_nofile() -> int:
    found = re.search(r"^LimitNOFILE=(\d+)", UNIT_FILE.read_text(), re.MULTILINE)
    if not found:
        raise SystemExit(f"no LimitNOFILE= in {UNIT_FILE}")
    return int(found.group(1))


def machine() -> str:
    """What shares the machine: CPUs, load, memory, and the busiest other processes."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    memory = psutil.virtual_memory()
    procs = []
    for p in psutil.process_iter(["pid", "name", "cpu_percent", "memory_info"]):
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
            procs.append(p)
    time.sleep(1.0)
    busy = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid():
                busy.append((p.cpu_percent(None), p.info["name"], p.pid))
    busy.sort(reverse=True)
    top = "; ".join(f"{name} ({pid}) {cpu:.0f}%" for cpu, name, pid in busy[:6])
    return (f"machine: {psutil.cpu_count()} CPUs, load {load}, memory "
            f"{memory.available / 2**30:.1f} GiB free of {memory.total / 2**30:.1f} GiB\n"
            f"busiest other processes over 1 s (% of one CPU): {top}")


def limit_descriptors(pid: int, wanted: int) -> str:
    process = psutil.Process(pid)
    try:
        process.rlimit(psutil.RLIMIT_NOFILE, (wanted, wanted))
        applied = f"{wanted}"
    except (psutil.AccessDenied, PermissionError, ValueError):
        hard = process.rlimit(psutil.RLIMIT_NOFILE)[1]
        soft = min(wanted, hard)
        process.rlimit(psutil.RLIMIT_NOFILE, (soft, hard))
        applied = f"{soft} (this machine's hard limit; {wanted} needs CAP_SYS_RESOURCE)"
    return f"LimitNOFILE={wanted} in {UNIT_FILE.name}; applied to the coordinator: {applied}"


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    verdict = "meets" if p99 < TARGET_P99_MS else "MISSES"
    return (f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms over "
            f"{len(ms)} calls ({verdict} the target p99 < {TARGET_P99_MS:.0f} ms)")


def probe(address: str, tls: TlsSettings, calls: int, fresh: int, out: Any) -> None:
    """In its own process: ListHosts on one channel, then on a new channel each call."""
    request, kept, renewed = admin_pb2.ListHostsRequest(), [], []
    ca, key, cert = tls.read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    with grpc.secure_channel(address, credentials) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        stub.ListHosts(request, timeout=10)
        for _ in range(calls):
            started = time.monotonic()
            stub.ListHosts(request, timeout=10)
            kept.append(time.monotonic() - started)
            time.sleep(0.02)
    for _ in range(fresh):
        started = time.monotonic()
        with grpc.secure_channel(address, credentials) as channel:
            admin_pb2_grpc.AdminStub(channel).ListHosts(request, timeout=10)
        renewed.append(time.monotonic() - started)
    out.send((kept, renewed))


def measure(address: str, tls: TlsSettings, calls: int, fresh: int) -> tuple[str, str]:
    receive, send = mp.get_context("spawn").Pipe(duplex=False)
    worker = mp.get_context("spawn").Process(target=probe,
                                             args=(address, tls, calls, fresh, send))
    worker.start()
    kept, renewed = receive.recv()
    worker.join()
    return percentiles(kept), percentiles(renewed)


class Abuse:
    """The hostile and broken clients, on this process's event loop."""

    def __init__(self, port: int, pki: Any) -> None:
        self.port = port
        self.pki = pki
        self.stop = asyncio.Event()
        self.counts: collections.Counter[str] = collections.Counter()
        self.tasks: list[asyncio.Task[None]] = []

    def context(self, tls: TlsSettings) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        ctx.set_alpn_protocols(["h2"])
        return ctx

    async def half_open(self, index: int) -> None:
        first = b"" if index % 2 else PARTIAL_CLIENT_HELLO
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.counts["half-open connect failed"] += 1
                await asyncio.sleep(0.5)
                continue
            self.counts["half-open opened"] += 1
            opened = time.monotonic()
            writer.write(first)
            with contextlib.suppress(OSError):
                await self.until_stopped(reader.read())
            if not self.stop.is_set():
                self.counts["half-open closed by the coordinator"] += 1
                self.counts["half-open seconds held"] += round(time.monotonic() - opened)
            writer.close()

    async def until_stopped(self, awaitable: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        stopped.cancel()

    async def streams(self, who: str, count: int) -> None:
        async with create_channel(f"127.0.0.1:{self.port}", self.pki.viewer(who)) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            calls = [stub.StreamEvents(admin_pb2.StreamEventsRequest(follow=True))
                     for _ in range(count)]

            async def hold(call: Any) -> None:
                try:
                    async for _ in call:
                        pass
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.CANCELLED:
                        self.counts[f"streams refused: {exc.code().name}"] += 1

            async def opened(call: Any) -> None:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await call.initial_metadata()
                    if not call.done():
                        self.counts[f"{'idle' if who != 'greedy' else 'greedy'} streams open"] += 1

            holders = [asyncio.create_task(hold(c)) for c in calls]
            await asyncio.gather(*(opened(c) for c in calls))
            await self.stop.wait()
            for call in calls:
                call.cancel()
            await asyncio.gather(*holders, return_exceptions=True)

    def h2_request(self, method: str, body_length: int) -> bytes:
        """Preface, SETTINGS and HEADERS of a gRPC call, then a message header announcing
        ``body_length`` bytes (HPACK literals, no Huffman)."""
        def literal(name: str, value: str) -> bytes:
            return bytes([0, len(name)]) + name.encode() + bytes([len(value)]) + value.encode()

        block = b"".join(literal(n, v) for n, v in (
            (":method", "POST"), (":scheme", "https"), (":path", method),
            (":authority", f"127.0.0.1:{self.port}"), ("content-type", "application/grpc"),
            ("te", "trailers")))
        return (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
                + frame(1, 4, 1, block) + frame(0, 0, 1, b"\x00" + struct.pack(">I",
                                                                           body_length)))

    async def trickler(self) -> None:
        """A publish whose body arrives one byte every 200 ms; SETTINGS and PINGs answered."""
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, ssl=self.context(self.pki.admin("trickler")))
            except OSError:
                self.counts["trickler connect failed"] += 1
                await asyncio.sleep(0.5)
                continue
            self.counts["trickler connections"] += 1
            writer.write(self.h2_request(PUBLISH, 100_000))
            answering = asyncio.create_task(answer_frames(reader, writer))
            with contextlib.suppress(OSError, ConnectionError):
                while not self.stop.is_set() and not answering.done():
                    writer.write(frame(0, 0, 1, b"\x00"))
                    await writer.drain()
                    await asyncio.sleep(0.2)
            answering.cancel()
            writer.close()

    async def non_reader(self) -> None:
        """Asks for the event history and following events, then never reads."""
        while not self.stop.is_set():
            try:
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, ssl=self.context(self.pki.viewer("slow")),
                    limit=1024)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            self.counts["non-reader connections"] += 1
            body = admin_pb2.StreamEventsRequest(follow=True).SerializeToString()
            request = self.h2_request("/landlord.v1.Admin/StreamEvents", len(body))
            writer.write(request + frame(0, 1, 1, body))
            with contextlib.suppress(OSError):
                await writer.drain()
            transport: Any = writer.transport
            transport.pause_reading()  # the kernel's buffer fills, then the window closes
            await self.until_stopped(asyncio.sleep(3600))
            writer.close()

    def start(self, half_open: int, idle_streams: int, slow: int) -> None:
        spawn = asyncio.create_task
        self.tasks += [spawn(self.half_open(i)) for i in range(half_open)]
        viewers = (idle_streams + STREAMS_PER_VIEWER - 1) // STREAMS_PER_VIEWER
        for v in range(viewers):
            count = min(STREAMS_PER_VIEWER, idle_streams - v * STREAMS_PER_VIEWER)
            self.tasks.append(spawn(self.streams(f"idle{v}", count)))
        self.tasks.append(spawn(self.streams("greedy", 100)))
        self.tasks += [spawn(self.trickler()) for _ in range(slow)]
        self.tasks += [spawn(self.non_reader()) for _ in range(slow)]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 30)


def summary(counts: collections.Counter[str]) -> str:
    closed = counts["half-open closed by the coordinator"]
    held = counts.pop("half-open seconds held", 0)
    mean = f", held {held / closed:.1f} s on average before closed" if closed else ""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + mean


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream) + payload


async def answer_frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """ACK the server's SETTINGS and PINGs, as a live (slow) client does; return at EOF or
    when the server ends the stream."""
    while True:
        header = await reader.readexactly(9)
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        payload = await reader.readexactly(length)
        if kind == 4 and not flags & 1:
            writer.write(frame(4, 1, 0, b""))
        elif kind == 6 and not flags & 1:
            writer.write(frame(6, 1, 0, payload))
        elif kind in (3, 7):  # RST_STREAM, GOAWAY
            return


def rss_peak(pid: int, stop: threading.Event, out: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            out.append(process.memory_info().rss)
        time.sleep(0.02)


async def publishes(address: str, tls: TlsSettings, pid: int, count: int, size: int) -> str:
    request = admin_pb2.PublishVersionRequest(version="1.0.0", metadata={"blob": "x" * size})
    body = request.SerializeToString()
    samples: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=rss_peak, args=(pid, stop, samples))
    before = psutil.Process(pid).memory_info().rss
    sampler.start()
    codes: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    async with create_channel(address, tls) as channel:
        call = channel.unary_unary(PUBLISH)

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
    statuses = ", ".join(f"{n} {code}" for code, n in codes.most_common())
    return (f"{count} concurrent {size / 1e6:.0f} MB publishes in {took:.1f} s: {statuses}; "
            f"coordinator RSS {before / 2**20:.0f} MiB before, peak "
            f"{max(samples, default=before) / 2**20:.0f} MiB (the audit saw 1.45 GB)")


async def small_publishes(address: str, tls: TlsSettings, count: int) -> str:
    """Publishes of another admin while the tricklers hold theirs: answered at once (an
    empty spec is refused INVALID_ARGUMENT once it has its turn), or refused for want of
    a turn (RESOURCE_EXHAUSTED)."""
    codes: collections.Counter[str] = collections.Counter()
    took = []
    async with create_channel(address, tls) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        for _ in range(count):
            started = time.monotonic()
            try:
                await stub.PublishVersion(admin_pb2.PublishVersionRequest(), timeout=30)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
            took.append(time.monotonic() - started)
    statuses = ", ".join(f"{n} {code}" for code, n in codes.most_common())
    return (f"{count} small publishes by another admin meanwhile: {statuses}; p50 "
            f"{statistics.median(took) * 1000:.1f} ms, max {max(took) * 1000:.1f} ms")


def coordinator_usage(pid: int) -> str:
    process = psutil.Process(pid)
    return (f"coordinator: {process.num_fds()} descriptors, RSS "
            f"{process.memory_info().rss / 2**20:.0f} MiB, {process.num_threads()} threads")


async def run(args: argparse.Namespace) -> None:
    print(machine(), flush=True)
    plane = ControlPlane("abuse", tls=True).start()
    try:
        coordinator = plane.coordinator
        print(limit_descriptors(coordinator.pid, installed_nofile()), flush=True)
        admin = plane.pki.admin() if plane.pki else None
        assert admin is not None
        kept, fresh = measure(coordinator.address, admin, args.calls, args.fresh)
        print(f"idle coordinator, ListHosts on one channel: {kept}\n"
              f"idle coordinator, ListHosts on a new connection each: {fresh}", flush=True)
        abuse = Abuse(coordinator.port, plane.pki)
        abuse.start(args.half_open, args.idle_streams, args.slow)
        await asyncio.sleep(args.settle)
        print(f"abuse after {args.settle:g} s: {summary(abuse.counts.copy())}", flush=True)
        print(coordinator_usage(coordinator.pid), flush=True)
        kept, fresh = await asyncio.to_thread(measure, coordinator.address, admin, args.calls,
                                              args.fresh)
        print(f"under abuse, ListHosts on one channel: {kept}\n"
              f"under abuse, ListHosts on a new connection each: {fresh}", flush=True)
        print(coordinator_usage(coordinator.pid), flush=True)
        print(await small_publishes(coordinator.address, admin, 10), flush=True)
        print(f"abuse at the end: {summary(abuse.counts.copy())}", flush=True)
        await abuse.close()
        print(await publishes(coordinator.address, admin, coordinator.pid, args.publishes,
                              args.publish_mb * 1_000_000), flush=True)
        if not coordinator.running:
            print(f"the coordinator exited:\n{coordinator.log_tail()}")
    finally:
        plane.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--half-open", type=int, default=1100)
    parser.add_argument("--idle-streams", type=int, default=500)
    parser.add_argument("--slow", type=int, default=20, help="slow clients of each kind")
    parser.add_argument("--calls", type=int, default=300, help="ListHosts on one channel")
    parser.add_argument("--fresh", type=int, default=50, help="ListHosts, new connection each")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds between starting the abuse and measuring")
    parser.add_argument("--publishes", type=int, default=40)
    parser.add_argument("--publish-mb", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
