"""``landlord-coordinator`` under a systemd-like supervisor: a real process with a unix
datagram socket as NOTIFY_SOCKET and WATCHDOG_USEC set. READY=1 once it serves, WATCHDOG=1
from its event loop at half the watchdog period, no pings while it is stopped (SIGSTOP: what
lets systemd kill a hung coordinator), STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from local_cluster.daemons import BIN
from local_cluster.etcd import EtcdProcess
from local_cluster.processes import free_port

WATCHDOG_USEC = 400_000  # pings every 0.2 s


def _next(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    return sock.recv(4096)


def _drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out: list[bytes] = []
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        return out


def test_coordinator_pings_the_watchdog_from_its_loop(tmp_path: Path, etcd: EtcdProcess,
                                                      prefix: str) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, \
            (tmp_path / "log").open("w") as log:
        sock.bind(str(path))
        env = {**{k: v for k, v in os.environ.items()
                  if not k.startswith(("LANDLORD_", "WATCHDOG_", "NOTIFY_"))},
               "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        proc = subprocess.Popen(
            [str(BIN / "landlord-coordinator"), "--listen", f"127.0.0.1:{free_port()}",
             "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix,
             "--leader-lease-ttl", "2", "--log-format", "text", "--insecure"],
            env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            first = _next(sock, 30)
            assert first.startswith(b"READY=1\nSTATUS=serving on 127.0.0.1:"), first
            started = time.monotonic()
            assert [_next(sock, 2) for _ in range(3)] == [b"WATCHDOG=1"] * 3
            assert time.monotonic() - started < 1.5

            proc.send_signal(signal.SIGSTOP)
            time.sleep(0.1)
            _drain(sock)  # what was in flight when it stopped
            time.sleep(1.0)  # five ping intervals
            assert _drain(sock) == []

            proc.send_signal(signal.SIGCONT)
            assert _next(sock, 2) == b"WATCHDOG=1"

            proc.send_signal(signal.SIGTERM)
            rest = [_next(sock, 10)]
            while rest[-1] == b"WATCHDOG=1":
                rest.append(_next(sock, 10))
            assert rest[-1] == b"STOPPING=1"
            assert proc.wait(15) == 0, (tmp_path / "log").read_text()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(10)
