"""Data plane figures on loopback (prints only; nothing here passes or fails).

1. Requests per second and latency p50/p99 through HAProxy versus straight to the
   backend (same single backend, same keep-alive client), and their ratio.
2. Time from a weight change command to the new split being seen by a client,
   p50/p99 over repeated 100/0 <-> 0/100 flips under load; also how long the
   ``set_weights`` call itself takes.
3. Failed requests during 100 weight changes under load.

Run: ``.venv/bin/python bench/dataplane.py [--seconds 2] [--rounds 5] [--concurrency 8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.dataplane import DataPlane, DataPlaneSettings  # noqa: E402
from common.weights import split_weights  # noqa: E402
from tests.integration.dataplane.dataplane_fixtures import free_port  # noqa: E402
from tests.integration.dataplane.dataplane_load import LoadGenerator, Result  # noqa: E402

BACKEND = ROOT / "tests" / "integration" / "dataplane" / "dataplane_backend.py"
ADVERTISE = "127.0.0.2"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def start_backend(name: str, version: str, addr: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port(addr)
    proc = subprocess.Popen(
        [sys.executable, str(BACKEND), addr, str(port), version, name],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc, port


STATIC_CONFIG = "\n".join(
    [
        "global",
        "    pidfile {pid}",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 10s",
        "    timeout server 10s",
        "frontend static",
        "    bind {addr}:{port}",
        '    http-request return status 200 content-type text/plain string "3.0.0 static"'
        " hdr X-Served-Version 3.0.0",
        "",
    ]
)


def start_static_backend(root: Path, addr: str) -> tuple[Path, int]:
    """A second, plain HAProxy that answers every request itself: a backend that is never
    the bottleneck, so the data plane's own cost shows."""
    port = free_port(addr)
    cfg, pid = root / "static.cfg", root / "static.pid"
    cfg.write_text(STATIC_CONFIG.format(pid=pid, addr=addr, port=port))
    subprocess.run(["/usr/sbin/haproxy", "-D", "-f", str(cfg)], check=True)
    return pid, port


async def measure(host: str, port: int, seconds: float, concurrency: int) -> list[Result]:
    with LoadGenerator(host, port, concurrency=concurrency) as load:
        await asyncio.sleep(0.5)  # warm-up: connections opened
        start = time.monotonic()
        await asyncio.sleep(seconds)
        end = time.monotonic()
        results = load.stop()
    return [r for r in results if start <= r.t0 and r.t1 <= end]


def summarize(results: list[Result], seconds: float) -> tuple[float, float]:
    """(requests per second, p99 ms) of one measurement; a failure is reported at once."""
    failed = [r for r in results if r.failed]
    if failed:
        print(f"    {len(failed)} failed requests, e.g. {failed[0].status} {failed[0].error}")
    latencies = [(r.t1 - r.t0) * 1000.0 for r in results]
    return len(results) / seconds, quantile(latencies, 0.99)


def report(label: str, rounds: list[tuple[float, float]]) -> tuple[float, float]:
    rps = statistics.median(r for r, _ in rounds)
    p99 = statistics.median(p for _, p in rounds)
    spread = ", ".join(f"{r:.0f}" for r, _ in rounds)
    print(f"  {label:<16} {rps:8.0f} req/s (rounds: {spread})   p99 {p99:6.2f} ms (median)")
    return rps, p99


async def overhead(
    plane: DataPlane, unit_port: int, direct: dict[str, tuple[str, int]], args: argparse.Namespace
) -> None:
    """Through HAProxy and direct, interleaved in short rounds so that load from elsewhere on
    this shared machine hits both alike; the medians over the rounds are compared."""
    rounds, seconds = args.rounds, args.seconds
    print(
        f"1. throughput and latency, {args.concurrency} keep-alive clients, "
        f"{rounds} interleaved rounds of {seconds:.1f} s each way"
    )
    for name, (addr, port) in direct.items():
        weights = {server: (100 if server == name else 0) for server in ("v1", "v2", "static")}
        await plane.set_weights("bench", weights)
        await asyncio.sleep(0.3)
        print(f"  backend {name}:")
        via: list[tuple[float, float]] = []
        straight: list[tuple[float, float]] = []
        for index in range(rounds):
            order = [(ADVERTISE, unit_port, via), (addr, port, straight)]
            for host, target, sink in order if index % 2 == 0 else order[::-1]:
                sink.append(summarize(await measure(host, target, seconds, args.concurrency),
                                      seconds))
        rps_via, p99_via = report("through haproxy", via)
        rps_direct, p99_direct = report("direct", straight)
        print(
            f"    ratio direct/through: req/s x{rps_direct / rps_via:.2f}, "
            f"p99 through/direct x{p99_via / p99_direct:.2f}   (target: req/s ratio < 1.3)"
        )


async def switch_time(plane: DataPlane, unit_port: int, args: argparse.Namespace) -> None:
    flips = args.flips
    print(f"2. weight change to observed split, {flips} flips 100/0 <-> 0/100 under load")
    commands: list[tuple[float, float, str]] = []
    with LoadGenerator(ADVERTISE, unit_port, concurrency=4) as load:
        await asyncio.sleep(0.5)
        for i in range(flips):
            target = "2.0.0" if i % 2 == 0 else "1.0.0"
            weights = {"v1": 0, "v2": 100} if target == "2.0.0" else {"v1": 100, "v2": 0}
            sent = time.monotonic()
            await plane.set_weights("bench", weights)
            commands.append((sent, time.monotonic(), target))
            await asyncio.sleep(0.3)
        results = load.stop()
    observed, calls = [], []
    for index, (sent, returned, target) in enumerate(commands):
        until = commands[index + 1][0] if index + 1 < len(commands) else float("inf")
        period = [r for r in results if sent <= r.t1 < until and not r.failed]
        old_starts = [r.t0 for r in period if r.version != target]
        settled = max(old_starts, default=sent)  # every request sent after this saw the new split
        first_new = [r.t1 for r in period if r.version == target and r.t0 >= settled]
        if first_new:
            observed.append((min(first_new) - sent) * 1000.0)
        calls.append((returned - sent) * 1000.0)
    print(
        f"  set_weights call        p50 {quantile(calls, 0.5):6.2f} ms   "
        f"p99 {quantile(calls, 0.99):6.2f} ms"
    )
    print(
        f"  command -> client sees  p50 {quantile(observed, 0.5):6.2f} ms   "
        f"p99 {quantile(observed, 0.99):6.2f} ms   ({len(observed)} flips measured)"
    )


async def changes_under_load(plane: DataPlane, unit_port: int, args: argparse.Namespace) -> None:
    print("3. 100 weight changes under load (random splits, 20 ms apart)")
    rng = random.Random(7)
    servers = {"1.0.0": ["v1"], "2.0.0": ["v2"]}
    with LoadGenerator(ADVERTISE, unit_port, concurrency=args.concurrency) as load:
        await asyncio.sleep(0.3)
        for _ in range(100):
            percent = rng.choice([0, 1, 5, 10, 25, 50, 75, 90, 100])
            await plane.set_weights(
                "bench", split_weights({"1.0.0": 100 - percent, "2.0.0": percent}, servers)
            )
            await asyncio.sleep(0.02)
        results = load.stop()
    failed = [r for r in results if r.failed]
    print(f"  requests {len(results)}   failed {len(failed)}")
    for sample in failed[:5]:
        print(f"    e.g. status {sample.status} {sample.error}")


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="lldp-bench-"))
    backends = [
        start_backend("v1", "1.0.0", "127.0.0.3"),
        start_backend("v2", "2.0.0", "127.0.0.4"),
    ]
    static_pid, static_port = start_static_backend(data_dir, "127.0.0.5")
    settings = DataPlaneSettings(check_inter_ms=500, check_rise=1)
    plane = DataPlane(data_dir, ADVERTISE, settings=settings)
    try:
        await plane.start()
        unit_port = free_port(ADVERTISE)
        await plane.ensure_unit("bench", unit_port)
        await plane.add_server("bench", "v1", "127.0.0.3", backends[0][1], "1.0.0", 100)
        await plane.add_server("bench", "v2", "127.0.0.4", backends[1][1], "2.0.0", 0)
        await plane.add_server("bench", "static", "127.0.0.5", static_port, "3.0.0", 0)
        await asyncio.sleep(1.0)
        print("HAProxy 2.6 data plane on loopback; Python keep-alive client in its own process")
        direct = {
            "python http.server": ("127.0.0.3", backends[0][1]),
            "static (haproxy)": ("127.0.0.5", static_port),
        }
        await overhead(
            plane,
            unit_port,
            {"v1": direct["python http.server"], "static": direct["static (haproxy)"]},
            args,
        )
        await plane.set_weights("bench", {"v1": 100, "v2": 0, "static": 0})
        await switch_time(plane, unit_port, args)
        await changes_under_load(plane, unit_port, args)
        print(
            f"request log lines received {plane.log_lines_received}, "
            f"dropped by haproxy since its last reload {await plane.dropped_logs()}"
        )
    finally:
        await plane.shutdown()
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(static_pid.read_text().split()[0]), signal.SIGTERM)
        for proc, _ in backends:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--flips", type=int, default=40)
    asyncio.run(main(parser.parse_args()))
