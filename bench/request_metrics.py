"""Request metrics under load: exact counts and sampled latency at ~10,000 req/s.

One HAProxy run by the agent's real data plane (agent/dataplane, as bench/dataplane.py
sets it up) in front of a fast backend (a plain HAProxy answering 2 % of requests with
500), driven by ``wrk`` (not Python) at about ``--rate`` requests per second for
``--seconds``. For each log sampling ratio (``--sample-every``, "auto" picks it from the
rate so that about ``--lines-per-second`` lines reach the agent) it prints what wrk
counted, what the agent's request windows counted (HAProxy's per-server counters), the
difference, the log lines sampled/received/dropped, latency from the sampled lines next
to wrk's, and the agent's CPU (this process: the data plane runs here) as % of one core,
each next to its target. Prints only; nothing here passes or fails. No coordinator is
involved, so there is no mTLS stream to turn on.

Run: ``.venv/bin/python bench/request_metrics.py [--rate 10000] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.dataplane import DataPlane, DataPlaneSettings, merge_snapshots  # noqa: E402
from tests.integration.dataplane.dataplane_fixtures import free_port  # noqa: E402

ENTRY, BACKEND = "127.0.0.211", "127.0.0.212"
UNIT = "bench"
FAILING_PERCENT = 2

BACKEND_CONFIG = """global
    pidfile {pid}
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fast
    bind {addr}:{port}
    http-request return status 500 if {{ rand(100) lt {failing} }}
    http-request return status 200 content-type text/plain string ok
"""

# wrk waits ``delay()`` ms before each request on a connection: the rate is set by the
# connections and the delay (wrk has no rate option; wrk2 is not in Debian). The round
# trip adds to the delay, so more connections with a longer delay come closer to the rate
# asked (50 x 5 ms), at the cost of more requests in flight when wrk stops.
WRK_SCRIPT = "function delay()\n  return {delay}\nend\n"


@dataclass(frozen=True)
class WrkFigures:
    requests: int
    non_2xx: int
    socket_errors: int
    seconds: float
    latency_ms: dict[str, float]


def parse_wrk(text: str) -> WrkFigures:
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
    if done is None:
        raise SystemExit(f"wrk printed no summary:\n{text}")
    seconds = float(done.group(2)) / (1000.0 if done.group(3) == "ms" else 1.0)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text)
    latency = {}
    for label, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        latency[f"p{label}"] = float(value) * scale
    return WrkFigures(int(done.group(1)), int(non_2xx.group(1)) if non_2xx else 0,
                      sum(int(g) for g in errors.groups()) if errors else 0, seconds, latency)


def start_backend(root: Path) -> tuple[Path, int]:
    port = free_port(BACKEND)
    cfg, pid = root / "backend.cfg", root / "backend.pid"
    cfg.write_text(BACKEND_CONFIG.format(pid=pid, addr=BACKEND, port=port,
                                         failing=FAILING_PERCENT))
    subprocess.run(["/usr/sbin/haproxy", "-D", "-f", str(cfg)], check=True)
    return pid, port


async def run_wrk(port: int, args: argparse.Namespace, script: Path) -> WrkFigures:
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t", "1", "-c", str(args.connections), "-d", f"{args.seconds}s", "--latency",
        "-s", str(script), f"http://{ENTRY}:{port}/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return parse_wrk(out.decode())


def target(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def one_run(root: Path, backend_port: int, every: int, args: argparse.Namespace) -> None:
    settings = DataPlaneSettings(check_inter_ms=500, check_rise=1, log_sample_every=every)
    plane = DataPlane(root / f"plane-{every}", ENTRY, settings=settings)
    me = psutil.Process()
    try:
        await plane.start()
        port = free_port(ENTRY)
        await plane.ensure_unit(UNIT, port)
        await plane.add_server(UNIT, "fast", BACKEND, backend_port, "1.0.0", 100)
        await asyncio.sleep(1.5)  # health check up, first counter reading taken
        script = root / "rate.lua"
        delay = max(1, round(args.connections * 1000 / args.rate))
        script.write_text(WRK_SCRIPT.format(delay=delay))
        dropped_before = await plane.dropped_logs()
        received_before = plane.log_lines_received
        await plane.counts.read()
        counted_before = plane.counts.requests
        cpu_before, wall_before = me.cpu_times(), time.monotonic()
        wrk = await run_wrk(port, args, script)
        wall = time.monotonic() - wall_before
        cpu_after = me.cpu_times()
        await asyncio.sleep(1.0)  # the last log datagrams
        await plane.counts.read()
        cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / wall
        merged = merge_snapshots(plane.window(UNIT, seconds=args.seconds + 30))
        assert merged is not None
        counted = plane.counts.requests - counted_before
        received = plane.log_lines_received - received_before
        dropped = await plane.dropped_logs() - dropped_before
        sampled = counted / every
        print(f"-- log_sample_every {every} (HAProxy logs one request in {every})")
        print(f"  wrk: {wrk.requests} requests in {wrk.seconds:.2f} s = "
              f"{wrk.requests / wrk.seconds:.0f} req/s (target ~{args.rate}), "
              f"non-2xx {wrk.non_2xx}, socket errors {wrk.socket_errors}")
        gap = counted - wrk.requests
        in_flight = args.connections  # wrk stops with at most one request per connection
        print(f"  agent windows: {merged.requests} requests, {merged.errors} errors "
              f"(HAProxy counted {counted} in the run)")
        print(f"  requests vs wrk: {gap:+d} (target: 0 .. +{in_flight}, the requests in "
              f"flight when wrk stopped; {target(0 <= gap <= in_flight)})")
        error_gap = merged.errors - wrk.non_2xx
        print(f"  errors vs wrk: {error_gap:+d} (target: 0 .. +{in_flight}; "
              f"{target(0 <= error_gap <= in_flight)}); error rate "
              f"{merged.error_rate:.4%} vs wrk {wrk.non_2xx / max(1, wrk.requests):.4%}")
        unaccounted = sampled - received - dropped
        print(f"  log lines: sampled {sampled:.0f} (requests / {every}), received {received}, "
              f"dropped {dropped} (HAProxy's DroppedLogs), unaccounted {round(unaccounted):+d} "
              f"({unaccounted / max(1.0, sampled):+.2%}; target: none beyond HAProxy's "
              "uncoordinated per-thread sampling, ~0.5 %)")
        p = {q: merged.latency.quantile(q / 100) for q in (50, 90, 99)}
        ours = ", ".join(f"p{q} {v:.2f}" for q, v in p.items() if v is not None)
        theirs = ", ".join(f"{k} {v:.2f}" for k, v in wrk.latency_ms.items())
        print(f"  latency ms from {merged.latency.count} sampled lines (HAProxy %Ta, "
              f"integer ms): {ours}; wrk (client side): {theirs}")
        print(f"  agent CPU: {cpu:.1%} of one core over {wall:.1f} s "
              f"(target < 5 %; {target(cpu < 0.05)})")
    finally:
        await plane.shutdown()


async def main(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (scripts/services.sh installs it)")
    ratios = []
    for item in args.sample_every.split(","):
        auto = max(1, round(args.rate / args.lines_per_second))
        ratios.append(auto if item == "auto" else int(item))
    root = Path(tempfile.mkdtemp(prefix="llrm-bench-"))
    pid_file, backend_port = start_backend(root)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"request metrics under load: wrk -t1 -c{args.connections} at ~{args.rate} req/s "
          f"for {args.seconds} s through one data-plane HAProxy to a HAProxy backend failing "
          f"{FAILING_PERCENT} %; {os.cpu_count()} cores, load average before: {load} "
          "(other work on this machine shares them)")
    try:
        for every in ratios:
            await one_run(root, backend_port, every, args)
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--lines-per-second", type=int, default=200,
                        help="for --sample-every auto: log lines per second the agent gets")
    parser.add_argument("--sample-every", default="1,auto",
                        help="comma-separated ratios to run; 1 logs every request (as before)")
    asyncio.run(main(parser.parse_args()))
