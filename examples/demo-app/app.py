#!/usr/bin/env python3
"""Demo workload for Landlord: a tiny versioned HTTP service with fault knobs.

Standard library only, so it runs on a bare Debian ``python3-minimal`` +
``libpython3-stdlib`` image. Endpoints:

- ``GET /``         -> ``{"version", "host", "instance", "count"}``; subject to
  ``ERROR_RATE`` and ``LATENCY_MS``; increments the request counter.
- ``GET /healthz``  -> ``{"status": "ok", "version"}`` (``/health`` is an alias);
  never failed or delayed by the knobs.
- ``GET /state``    -> counter, state directory, leaked bytes and requests in
  flight (this one included).
- ``GET /bytes?n=N`` -> N bytes (up to 1 GiB) of ``application/octet-stream``: a
  download; ``POST /upload`` reads its body and answers ``{"received": bytes}``.

Knobs (environment):

- ``VERSION``          reported version (the image sets it).
- ``PORT``             TCP port, default 8080 (0 picks a free one).
- ``BIND``             IP address to listen on, default 127.0.0.1.
- ``HOST_ID``          reported host name, default ``socket.gethostname()``.
- ``INSTANCE_ID``      reported instance id, optional.
- ``ERROR_RATE``       fraction 0..1 of ``/`` requests answered with 500.
- ``LATENCY_MS``       milliseconds added to each ``/`` response.
- ``LEAK_MB_PER_MIN``  memory allocated, touched (resident) and kept per minute.
- ``CRASH_AFTER_S``    exit with status 3 after that many seconds.
- ``STATE_DIR``        directory holding the request counter (``counter.json``),
  written atomically (temp file + rename) under a file lock on every ``/``
  request, so instances of different versions can share and inherit it.
- ``LOG_REQUESTS``     ``1`` logs one line per request to stderr (default quiet).

Exit status: 0 after SIGTERM/SIGINT (stops accepting, finishes in-flight
requests), 1 when the address cannot be bound, 2 for a bad knob value,
3 for the ``CRASH_AFTER_S`` crash.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

EXIT_BIND_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_CRASH = 3
COUNTER_FILE = "counter.json"
DRAIN_TIMEOUT_S = 8.0  # below Docker's default 10 s stop timeout
MIB = 1024 * 1024
MAX_TRANSFER = 1024 * MIB
CHUNK = 64 * 1024
PAGE = 4096
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class ConfigError(ValueError):
    """A knob has a value the app cannot use; the message names the knob."""


@dataclass(frozen=True)
class DemoConfig:
    """Validated knobs, read once at start."""

    version: str
    """Version reported on every response."""
    port: int
    """TCP port; 0 asks the kernel for a free one."""
    bind: str
    """IP address literal to listen on."""
    host_id: str
    """Host name reported on ``/``."""
    instance_id: str | None
    """Instance id reported on ``/`` when set."""
    error_rate: float
    """Fraction of ``/`` requests answered with 500."""
    latency_ms: float
    """Delay added to each ``/`` response."""
    leak_mb_per_min: float
    """Memory leaked (kept and resident) per minute."""
    crash_after_s: float | None
    """Seconds after start at which the process exits with status 3."""
    state_dir: Path | None
    """Directory of the persistent request counter; None keeps it in memory."""
    log_requests: bool
    """Log one line per request to stderr."""


def _number(env: Mapping[str, str], name: str, default: float, low: float,
            high: float | None = None) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value != value or value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ConfigError(f"{name}={raw!r} must be {bound}")
    return value


def parse_config(env: Mapping[str, str]) -> DemoConfig:
    """Read and validate the knobs; raise ConfigError naming the bad one."""
    raw_port = env.get("PORT", "").strip() or "8080"
    try:
        port = int(raw_port)
    except ValueError:
        raise ConfigError(f"PORT={raw_port!r} is not an integer") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"PORT={raw_port!r} must be between 0 and 65535")
    bind = env.get("BIND", "").strip() or "127.0.0.1"
    try:
        ipaddress.ip_address(bind)
    except ValueError:
        raise ConfigError(f"BIND={bind!r} is not an IP address") from None
    crash = env.get("CRASH_AFTER_S", "").strip()
    crash_after_s = _number(env, "CRASH_AFTER_S", 0.0, 0.0) if crash else None
    if crash_after_s is not None and crash_after_s <= 0:
        raise ConfigError(f"CRASH_AFTER_S={crash!r} must be > 0")
    raw_state = env.get("STATE_DIR", "").strip()
    log_raw = env.get("LOG_REQUESTS", "").strip().lower() or "0"
    if log_raw not in {"0", "1", "true", "false", "yes", "no"}:
        raise ConfigError(f"LOG_REQUESTS={log_raw!r} must be 0 or 1")
    return DemoConfig(
        version=env.get("VERSION", "").strip() or "0.0.0-dev",
        port=port,
        bind=bind,
        host_id=env.get("HOST_ID", "").strip() or socket.gethostname(),
        instance_id=env.get("INSTANCE_ID", "").strip() or None,
        error_rate=_number(env, "ERROR_RATE", 0.0, 0.0, 1.0),
        latency_ms=_number(env, "LATENCY_MS", 0.0, 0.0, 600_000.0),
        leak_mb_per_min=_number(env, "LEAK_MB_PER_MIN", 0.0, 0.0, 1_000_000.0),
        crash_after_s=crash_after_s,
        state_dir=Path(raw_state) if raw_state else None,
        log_requests=log_raw in {"1", "true", "yes"},
    )


class RequestCounter:
    """Counts ``/`` requests, in memory or in ``STATE_DIR/counter.json``.

    On disk every increment is read-modify-write under ``flock`` on a lock file
    and the new value replaces the old file by rename, so two instances that
    share the directory (blue and green) neither lose counts nor see a torn file.
    """

    def __init__(self, state_dir: Path | None, writer: str) -> None:
        self._dir = state_dir
        self._writer = writer
        self._lock = threading.Lock()
        self._memory = 0
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            self._memory = self._read()  # fail at start on an unreadable file

    def _read(self) -> int:
        assert self._dir is not None
        try:
            data = json.loads((self._dir / COUNTER_FILE).read_text())
        except FileNotFoundError:
            return 0
        count = data.get("count") if isinstance(data, dict) else None
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"{self._dir / COUNTER_FILE} holds no valid count")
        return count

    def current(self) -> int:
        with self._lock:
            if self._dir is None:
                return self._memory
            return self._read()

    def increment(self) -> int:
        with self._lock:
            if self._dir is None:
                self._memory += 1
                return self._memory
            with open(self._dir / "counter.lock", "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                count = self._read() + 1
                tmp = self._dir / f".{COUNTER_FILE}.{os.getpid()}.{threading.get_ident()}"
                body = {"count": count, "updated_by": self._writer, "updated_at": time.time()}
                tmp.write_text(json.dumps(body))
                os.replace(tmp, self._dir / COUNTER_FILE)
            return count


class MemoryLeak:
    """Allocates ``rate`` MiB per minute in one-second steps and keeps it resident."""

    def __init__(self, mb_per_min: float) -> None:
        self._bytes_per_s = mb_per_min * MIB / 60.0
        self._kept: list[bytearray] = []
        self.leaked_bytes = 0

    def run(self, stop: threading.Event) -> None:
        owed = 0.0
        while not stop.wait(1.0):
            owed += self._bytes_per_s
            size = int(owed)
            if size <= 0:
                continue
            owed -= size
            chunk = bytearray(size)
            chunk[::PAGE] = b"\x01" * len(range(0, size, PAGE))  # touch every page
            self._kept.append(chunk)
            self.leaked_bytes += size


class DemoServer(ThreadingHTTPServer):
    """Threaded server that knows its config, counter and in-flight requests."""

    daemon_threads = True  # idle keep-alive connections must not block exit

    def __init__(self, config: DemoConfig, counter: RequestCounter, leak: MemoryLeak) -> None:
        if ":" in config.bind:
            self.address_family = socket.AF_INET6
        super().__init__((config.bind, config.port), DemoHandler)
        self.config = config
        self.counter = counter
        self.leak = leak
        self.rng = random.Random()
        self.draining = threading.Event()
        self._in_flight = 0
        self._idle = threading.Condition()

    def request_started(self) -> None:
        with self._idle:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    @property
    def in_flight(self) -> int:
        with self._idle:
            return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # drop idle keep-alive connections

    def do_GET(self) -> None:
        self.server.request_started()
        try:
            self._route()
        finally:
            self.server.request_finished()

    def do_POST(self) -> None:
        self.server.request_started()
        try:
            if self.path.split("?", 1)[0] != "/upload":
                self.close_connection = True  # its body is left unread
                self._send(404, {"error": "not found", "path": self.path})
                return
            left = received = int(self.headers.get("Content-Length") or 0)
            while left > 0 and (chunk := self.rfile.read(min(left, CHUNK))):
                left -= len(chunk)
            self._send(200, {"received": received - left})
        finally:
            self.server.request_finished()

    def _download(self, query: str) -> None:
        fields = dict(part.partition("=")[::2] for part in query.split("&"))
        size = fields.get("n", "")
        if not size.isdigit() or int(size) > MAX_TRANSFER:
            self._send(400, {"error": f"n must be a byte count up to {MAX_TRANSFER}"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", size)
        self.end_headers()
        left, chunk = int(size), b"x" * CHUNK
        while left > 0:
            self.wfile.write(chunk[:left])
            left -= CHUNK

    def _route(self) -> None:
        path, _, query = self.path.partition("?")
        config = self.server.config
        if path in ("/healthz", "/health"):
            self._send(200, {"status": "ok", "version": config.version})
        elif path == "/state":
            self._send(200, {
                "version": config.version,
                "count": self.server.counter.current(),
                "state_dir": str(config.state_dir) if config.state_dir else None,
                "leaked_bytes": self.server.leak.leaked_bytes,
                "in_flight": self.server.in_flight,  # includes this request
            })
        elif path == "/":
            self._root(config)
        elif path == "/bytes":
            self._download(query)
        else:
            self._send(404, {"error": "not found", "path": path})

    def _root(self, config: DemoConfig) -> None:
        if config.latency_ms > 0:
            time.sleep(config.latency_ms / 1000.0)
        count = self.server.counter.increment()
        if config.error_rate > 0 and self.server.rng.random() < config.error_rate:
            self._send(500, {"error": "injected failure", "version": config.version})
            return
        self._send(200, {
            "version": config.version,
            "host": config.host_id,
            "instance": config.instance_id,
            "count": count,
        })

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Demo-Version", self.server.config.version)
        if self.server.draining.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.config.log_requests:
            super().log_message(format, *args)


def _say(message: str) -> None:
    print(f"demo-app: {message}", file=sys.stderr, flush=True)


def _crash_later(seconds: float) -> None:
    def crash() -> None:
        _say(f"crashing after {seconds:g}s as CRASH_AFTER_S asked")
        os._exit(EXIT_CRASH)

    timer = threading.Timer(seconds, crash)
    timer.daemon = True
    timer.start()


def serve(config: DemoConfig) -> int:
    """Run until SIGTERM/SIGINT; return the process exit status."""
    try:
        counter = RequestCounter(config.state_dir, writer=config.version)
    except (OSError, ValueError) as exc:
        _say(f"STATE_DIR={str(config.state_dir)!r} is unusable: {exc}")
        return EXIT_BAD_CONFIG
    leak = MemoryLeak(config.leak_mb_per_min)
    try:
        server = DemoServer(config, counter, leak)
    except OSError as exc:
        _say(f"cannot listen on {config.bind}:{config.port}: {exc}")
        return EXIT_BIND_FAILED
    # Block the stop signals before any thread starts (threads inherit the mask) and
    # take them synchronously below: no Python-level handler racing the lock in Event.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    stop = threading.Event()
    if config.leak_mb_per_min > 0:
        threading.Thread(target=leak.run, args=(stop,), name="leak", daemon=True).start()
    if config.crash_after_s is not None:
        _crash_later(config.crash_after_s)
    loop = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
    loop.start()
    _say(f"version {config.version} listening on {config.bind}:{server.server_port}")
    received = signal.sigwait(STOP_SIGNALS)
    _say(f"{signal.Signals(received).name} received, draining")
    stop.set()
    server.draining.set()
    server.shutdown()  # stop accepting; in-flight requests keep their threads
    server.server_close()
    if not server.wait_idle(DRAIN_TIMEOUT_S):
        _say("drain timed out with requests still in flight")
    _say("stopped")
    return 0


def main() -> int:
    try:
        config = parse_config(os.environ)
    except ConfigError as exc:
        _say(f"bad configuration: {exc}")
        return EXIT_BAD_CONFIG
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
