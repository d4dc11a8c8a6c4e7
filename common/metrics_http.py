"""The daemons' small HTTP endpoint: Prometheus metrics at ``/metrics``, health at
``/healthz``.

Served by asyncio on the daemon's own event loop (not prometheus_client's threaded server),
so collectors read the daemon's state between two of its steps, never while a step is
half done, and need no locks. Each daemon passes its own ``CollectorRegistry`` (never the
global one), so several daemons in one process (tests) do not clash.

A daemon may add ``pages``: answers for the other paths (the coordinator's read-only web
view), served under the same rules: GET (or HEAD) only, anything else 405.

On loopback the endpoint is plain HTTP and asks no client certificate; any other address
needs TLS (a server certificate and key; with a CA bundle, scrapers must also show a
certificate it signed): ``endpoint_problems`` says so before a daemon starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from common.transport import TlsSettings, is_loopback

__all__ = ["AGENT_METRICS_ADDRESS", "COORDINATOR_METRICS_ADDRESS", "HEALTH_PATH",
           "METRICS_PATH", "METRICS_SETTINGS", "Answer", "HealthCheck", "MetricsEndpoint",
           "MetricsServer", "Pages", "check_metrics_listen", "endpoint_problems",
           "serve_metrics"]

log = logging.getLogger(__name__)

COORDINATOR_METRICS_ADDRESS = "127.0.0.1:7401"
"""Where a coordinator serves /metrics by default (its gRPC port is 7400)."""
AGENT_METRICS_ADDRESS = "127.0.0.1:7402"
"""Where an agent serves /metrics and /healthz by default."""
METRICS_PATH = "/metrics"
METRICS_SETTINGS = ("metrics_listen", "metrics_tls_cert_file", "metrics_tls_key_file",
                    "metrics_tls_ca_file")
"""The settings every daemon with an endpoint has, in ``endpoint_problems``' order."""
HEALTH_PATH = "/healthz"
_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what every Prometheus server reads
_MAX_HEAD = 16 * 1024
_READ_TIMEOUT_S = 10.0

HealthCheck = Callable[[], Awaitable[tuple[bool, Mapping[str, Any]]]]
"""``(healthy, details)``: 200 with the details as JSON when healthy, else 503."""
Refresh = Callable[[], Awaitable[None]]
"""Async reads a scrape needs first (figures only an I/O call can give)."""
Answer = tuple[str, str, bytes]
"""(status line, content type, body)."""
Pages = Callable[[str], Awaitable[Answer | None]]
"""The answer for a path that is neither /metrics nor /healthz (None: 404)."""
_HEADERS = ("X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"
            "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n")
"""Every answer: no type sniffing, no caching, and a page may load only its own files."""


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where and how to serve: ``listen`` host:port ('' off, port 0 any free port)."""

    listen: str
    tls: TlsSettings = field(default_factory=TlsSettings)
    """cert_file and key_file: HTTPS; ca_file too: scrapers must show a certificate."""

    @classmethod
    def of(cls, listen: str, cert_file: str, key_file: str, ca_file: str) -> MetricsEndpoint:
        """From a daemon's four settings (checked by ``endpoint_problems`` first)."""
        return cls(listen, TlsSettings(ca_file=ca_file, cert_file=cert_file,
                                       key_file=key_file))

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def scheme(self) -> str:
        return "https" if self.tls.cert_file else "http"


def check_metrics_listen(value: str) -> str | None:
    """A setting's check: '' (off) or host:port."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"{value!r} is not host:port (or empty: off)"
    return None


def endpoint_problems(listen: str, cert_file: str, key_file: str, ca_file: str,
                      prefix: str = "metrics_") -> list[str]:
    """What is wrong with these endpoint settings (named with ``prefix``)."""
    out = []
    if bool(cert_file) != bool(key_file):
        out.append(f"{prefix}tls_cert_file and {prefix}tls_key_file go together")
    if ca_file and not cert_file:
        out.append(f"{prefix}tls_ca_file (scrapers' certificates) needs {prefix}tls_cert_file "
                   f"and {prefix}tls_key_file")
    if listen and not cert_file and not is_loopback(listen):
        out.append(f"{prefix}listen {listen!r} is not a loopback address: off loopback the "
                   f"endpoint needs TLS ({prefix}tls_cert_file and {prefix}tls_key_file)")
    for name, path in (("tls_cert_file", cert_file), ("tls_key_file", key_file),
                       ("tls_ca_file", ca_file)):
        if path and not Path(path).is_file():
            out.append(f"{prefix}{name} {path!r} does not exist")
    return out


class MetricsServer:
    """One listener; ``start`` binds it (OSError when it cannot), ``close`` ends it."""

    def __init__(self, endpoint: MetricsEndpoint, registry: CollectorRegistry, *,
                 health: HealthCheck | None = None, refresh: Refresh | None = None,
                 pages: Pages | None = None) -> None:
        self.endpoint = endpoint
        self.registry = registry
        self.health = health
        self.refresh = refresh
        self.pages = pages
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        host = self.endpoint.listen.rpartition(":")[0]
        return f"{self.endpoint.scheme}://{host}:{self.port}{METRICS_PATH}"

    async def start(self) -> int:
        host, _, port = self.endpoint.listen.rpartition(":")
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]"), int(port), ssl=_server_context(self.endpoint.tls),
            reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError, ssl.SSLError):
            writer.close()
            return
        try:
            status, content_type, body = await self.answer(head)
        except Exception:  # a collector's or a check's bug: the scrape fails, visibly
            log.exception("answering %r failed", head.split(b"\r\n", 1)[0][:100])
            status, content_type, body = ("500 Internal Server Error", "text/plain",
                                          b"internal error (see the daemon's log)\n")
        method = head.split(b" ", 1)[0]
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{_HEADERS}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        if method != b"HEAD":
            writer.write(body)
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT_S)
        writer.close()

    async def answer(self, head: bytes) -> Answer:
        """(status line, content type, body) for one request head."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or len(head) > _MAX_HEAD:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].decode("latin-1").partition("?")[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET or HEAD only\n"
        if target == METRICS_PATH:
            if self.refresh is not None:
                try:
                    await self.refresh()
                except Exception:  # a failed read leaves the figures before it
                    log.warning("refreshing metrics before a scrape failed", exc_info=True)
            return "200 OK", _CONTENT_TYPE, generate_latest(self.registry)
        if target == HEALTH_PATH and self.health is not None:
            healthy, details = await self.health()
            body = json.dumps({"healthy": healthy, **details}, sort_keys=True).encode()
            return ("200 OK" if healthy else "503 Service Unavailable",
                    "application/json", body + b"\n")
        if self.pages is not None:
            page = await self.pages(target)
            if page is not None:
                return page
        return "404 Not Found", "text/plain", f"try {METRICS_PATH}\n".encode()


def _server_context(tls: TlsSettings) -> ssl.SSLContext | None:
    if not tls.cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.ca_file:
        context.load_verify_locations(tls.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def serve_metrics(endpoint: MetricsEndpoint, registry: CollectorRegistry, what: str,
                        *, health: HealthCheck | None = None,
                        refresh: Refresh | None = None, pages: Pages | None = None
                        ) -> MetricsServer | None:
    """Start the endpoint when configured; None when off or when it cannot listen.

    A taken port is logged as an error, not fatal: metrics watch the daemon, and a daemon
    that stopped supervising because its observer's port was taken would hurt the fleet
    more than the missing metrics."""
    if not endpoint.enabled:
        log.info("%s metrics endpoint off (metrics_listen is empty)", what)
        return None
    server = MetricsServer(endpoint, registry, health=health, refresh=refresh, pages=pages)
    try:
        await server.start()
    except (OSError, ssl.SSLError) as exc:
        log.error("%s metrics endpoint off: cannot listen on %s: %s", what, endpoint.listen,
                  exc)
        return None
    log.info("%s metrics at %s", what, server.url)
    return server
