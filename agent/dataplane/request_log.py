"""HAProxy's per-request log lines: parse them (pure) and receive them (UNIX datagrams).

HAProxy sends one JSON line per logged request (format in haproxy_config._log_format) to
``log_sockets`` datagram sockets, spreading lines with ``sample i:n`` and logging one
request in ``log_sample_every``. The lines give latency and activity; request and error
counts come from HAProxy's own counters (server_counters.py), which lose nothing. Datagrams mean
HAProxy never waits for us: when the agent is down or slow, lines are dropped (and
counted by HAProxy as DroppedLogs), never queued in front of traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RequestLogReceiver", "RequestRecord", "is_error", "parse_log_line"]

log = logging.getLogger(__name__)

# First letter of the termination state that blames the server side or HAProxy itself:
# S server aborted/refused, s server timeout, P/I proxy or internal error, R resource
# exhausted, D down server killed the session, K killed by an admin.
_SERVER_SIDE_TERMINATION = frozenset("SsPIRDK")
# Client closed or timed out before sending a whole request: not a request at all.
_NOT_A_REQUEST = frozenset({"CR", "cR"})
_NO_SERVER = "<NOSRV>"


@dataclass(frozen=True)
class RequestRecord:
    unit: str
    version: str
    """"" when no server was chosen (e.g. no server available: 503)."""
    instance: str
    """The HAProxy server name, "" when none was chosen."""
    backend: str
    status: int
    """HTTP status sent to the client, -1 when none was."""
    latency_ms: float | None
    """HAProxy's %Ta: request received to last byte of the response sent."""
    termination: str
    error: bool

    @property
    def pinned(self) -> bool:
        """Routed by the version header or the stickiness cookie, not by weight."""
        return self.backend.startswith("pin")


def is_error(status: int, termination: str) -> bool:
    """5xx, no response at all, or a session ended by a failure on the server side."""
    if status >= 500 or status < 100:
        return True
    return bool(termination) and termination[0] in _SERVER_SIDE_TERMINATION


def parse_log_line(data: bytes) -> RequestRecord | None:
    """One log datagram to a record; None for lines that are not requests or not ours."""
    try:
        doc = json.loads(data)
        unit, server, backend = str(doc["u"]), str(doc["s"]), str(doc["b"])
        status, active, termination = int(doc["st"]), int(doc["ta"]), str(doc["ts"])
        version = str(doc.get("v", "-"))
    except (ValueError, KeyError, TypeError):
        return None
    if termination in _NOT_A_REQUEST:
        return None
    if server in (_NO_SERVER, "-"):
        server = ""
    if version == "-" or not server:
        version = ""
    return RequestRecord(
        unit=unit,
        version=version,
        instance=server,
        backend=backend,
        status=status,
        latency_ms=float(active) if active >= 0 else None,
        termination=termination,
        error=is_error(status, termination),
    )


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: RequestLogReceiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.receiver.handle(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("request log socket error: %s", exc)


class RequestLogReceiver:
    """Binds the datagram sockets and hands each parsed record to ``sink``."""

    def __init__(self, paths: Sequence[Path], sink: Callable[[RequestRecord], None]) -> None:
        self.paths = list(paths)
        self.sink = sink
        self.received = 0
        self.malformed = 0
        self._transports: list[asyncio.BaseTransport] = []

    def handle(self, data: bytes) -> None:
        for line in data.splitlines():
            if not line.strip():
                continue
            record = parse_log_line(line)
            if record is None:
                self.malformed += 1
                continue
            self.received += 1
            try:
                self.sink(record)
            except Exception:  # one bad record must not stop the metrics
                log.exception("request log sink failed")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for path in self.paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                    sock.bind(str(path))
                    os.chmod(path, 0o600)
                    sock.setblocking(False)
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _Protocol(self), sock=sock
                    )
                except BaseException:
                    sock.close()
                    raise
                self._transports.append(transport)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
