"""Watch every host's HAProxy weights for one unit, every few milliseconds, from a subprocess.

Each poll asks one host's runtime API (admin socket), on one connection, for
``show servers state be.<unit>`` and ``show map <unit>.version.map`` (server -> version) and
reduces it to the *effective* weight per version: a server counts with its weight when it is
up (or starting) and neither in maintenance nor draining, else 0 — i.e. how HAProxy splits new
requests at that moment. A line is written only when a host's split changes:

    {"t": <epoch s, middle of the exchange>, "dt": <half its duration>, "host": "h1",
     "w": {"1.0.0": 256, "1.1.0": 0}}

Run as ``python bench/zero_downtime_watch.py --out FILE --backend be.x --interval-ms 3
h1=/path/admin.sock=/path/x.version.map ...``; SIGTERM ends it. ``WeightWatcher`` starts and
stops it and reads the file back; it lives in its own process so the load generator's
threads never delay a sample.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.dataplane.haproxy_output import (  # noqa: E402
    parse_servers_state,
    parse_show_map,
    split_prompt_replies,
)

__all__ = ["HostSocket", "WeightChange", "WeightWatcher", "read_changes"]

_OP_STARTING, _OP_UP = 1, 2
# HAProxy 2.6 SRV_ADMF_*: FMAINT 0x01, IMAINT 0x02, CMAINT 0x04, FDRAIN 0x08, IDRAIN 0x10,
# RMAINT 0x20 (0x40, HMAINT, only says the FQDN was set)
_ADMIN_MAINT_OR_DRAIN = 0x3F


@dataclass(frozen=True)
class HostSocket:
    host: str
    admin_socket: Path
    version_map: Path

    def arg(self) -> str:
        return f"{self.host}={self.admin_socket}={self.version_map}"

    @staticmethod
    def parse(text: str) -> HostSocket:
        host, sock, vmap = text.split("=", 2)
        return HostSocket(host, Path(sock), Path(vmap))


@dataclass(frozen=True)
class WeightChange:
    """One host's effective weights per version from the moment ``at`` (±``error``)."""

    at: float
    error: float
    host: str
    weights: dict[str, int]

    def share(self, version: str) -> float | None:
        """Percent of new requests this host sends to ``version`` (None: nothing serves)."""
        total = sum(self.weights.values())
        return None if total == 0 else 100.0 * self.weights.get(version, 0) / total


def _exchange(path: Path, commands: Sequence[str], timeout: float = 1.0) -> list[str]:
    payload = "prompt\n" + "".join(f"{c}\n" for c in commands) + "quit\n"
    chunks: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(payload.encode())
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
    return split_prompt_replies(b"".join(chunks).decode(errors="replace"), len(commands))


def effective_weights(state_reply: str, map_reply: str) -> dict[str, int]:
    versions = parse_show_map(map_reply)
    weights: dict[str, int] = {}
    for row in parse_servers_state(state_reply):
        serving = (row.op_state in (_OP_STARTING, _OP_UP)
                   and not row.admin_bits & _ADMIN_MAINT_OR_DRAIN)
        version = versions.get(row.server, "?")
        weights[version] = weights.get(version, 0) + (row.weight if serving else 0)
    return weights


def watch(hosts: Sequence[HostSocket], backend: str, interval: float, out: Path) -> None:
    stopping = False

    def stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    last: dict[str, dict[str, int]] = {}
    with out.open("a", buffering=1) as sink:
        while not stopping:
            for host in hosts:
                began = time.time()
                try:
                    state, vmap = _exchange(host.admin_socket, [
                        f"show servers state {backend}", f"show map {host.version_map}"])
                except OSError:
                    continue  # HAProxy not there yet (or reloading): no sample
                ended = time.time()
                weights = effective_weights(state, vmap)
                if weights != last.get(host.host):
                    last[host.host] = weights
                    sink.write(json.dumps({"t": (began + ended) / 2, "dt": (ended - began) / 2,
                                           "host": host.host, "w": weights}) + "\n")
            time.sleep(interval)


def read_changes(path: Path) -> list[WeightChange]:
    changes: list[WeightChange] = []
    if not path.exists():
        return changes
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a line cut by the stop
        changes.append(WeightChange(float(item["t"]), float(item["dt"]), str(item["host"]),
                                    {str(k): int(v) for k, v in item["w"].items()}))
    return sorted(changes, key=lambda c: c.at)


class WeightWatcher:
    """The watch loop as a child process (started here, stopped by its pid)."""

    def __init__(self, hosts: Sequence[HostSocket], backend: str, out: Path,
                 interval_ms: float) -> None:
        self.args = [sys.executable, str(Path(__file__).resolve()), "--out", str(out),
                     "--backend", backend, "--interval-ms", str(interval_ms),
                     *(h.arg() for h in hosts)]
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WeightWatcher:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def changes(self) -> list[WeightChange]:
        return read_changes(self.out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--interval-ms", type=float, default=3.0)
    parser.add_argument("hosts", nargs="+", type=HostSocket.parse)
    args = parser.parse_args(argv)
    watch(args.hosts, args.backend, args.interval_ms / 1000.0, args.out)


if __name__ == "__main__":
    main()
