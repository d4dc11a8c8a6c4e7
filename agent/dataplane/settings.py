"""Tunables of the data plane and where its files live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidArgument

__all__ = ["DataPlaneSettings", "HaproxyPaths", "log_sockets_for_host", "threads_for_host"]

_DGRAM_QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")


def log_sockets_for_host(qlen_file: Path = _DGRAM_QLEN) -> int:
    """One socket (every line exact) where the datagram queue is long; else 16."""
    try:
        qlen = int(qlen_file.read_text().strip())
    except (OSError, ValueError):
        qlen = 10
    return 1 if qlen >= 256 else 16


def threads_for_host(cpus: int | None = None) -> int:
    """HAProxy threads for a host whose cores are mainly for its containers: a quarter of
    them, at least one. HAProxy's own default (one per core) makes its threads fight the
    backends it proxies to; on 2 cores one thread gave 1.08x instead of 1.3-1.4x the
    direct request rate in bench/dataplane.py."""
    count = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, count // 4)


@dataclass(frozen=True)
class DataPlaneSettings:
    """How this host's HAProxy is run and how its traffic is measured."""

    haproxy_binary: str = "/usr/sbin/haproxy"
    """The HAProxy 2.6+ executable."""
    retries: int = 3
    """Connection retries per request; with ``option redispatch`` the last goes elsewhere."""
    check_inter_ms: int = 1000
    """Health check interval per server."""
    check_rise: int = 2
    """Consecutive good checks before a down server is up again."""
    check_fall: int = 2
    """Consecutive failed checks before an up server is down."""
    connect_timeout_ms: int = 2000
    """``timeout connect``; a refused or hung connect is retried after it."""
    client_timeout_ms: int = 30000
    """``timeout client`` (and idle keep-alive on the client side)."""
    server_timeout_ms: int = 30000
    """``timeout server``: longest a backend may take to answer."""
    hard_stop_after_s: int = 60
    """An old worker left after a reload is killed after this long."""
    pin_slots: int = 3
    """Per-version backends rendered per unit (more versions at once cost a reload)."""
    version_header: str = "X-Landlord-Version"
    """Request header that pins a request to a version."""
    cookie_prefix: str = "LLV_"
    """Stickiness cookie name prefix; the unit name follows."""
    threads: int = 0
    """HAProxy worker threads (``nbthread``); 0 picks from the host (see
    :func:`threads_for_host`)."""
    metrics_listen: str = ""
    """host:port (loopback) where HAProxy's built-in Prometheus exporter answers
    ``/metrics``; "" leaves it off."""
    log_sockets: int = 0
    """UNIX datagram sockets the request log goes to; 0 picks from the host (see
    :func:`log_sockets_for_host`).

    Linux queues at most ``net.unix.max_dgram_qlen`` datagrams per receiving socket
    (10 by kernel default, 512 where systemd sets it); HAProxy drops a line that does
    not fit (counted as DroppedLogs) rather than wait. With n > 1 sockets, lines are
    spread with ``sample i:n``, multiplying that headroom; the cost is that HAProxy's
    per-target sample counters are not coordinated across its threads, so a few lines
    in a thousand go to two sockets while as many others go to none (totals stay exact,
    the mix of statuses and latencies is off by that much)."""
    log_sample_every: int = 1
    """HAProxy sends the log line of one request in this many (``sample 1:n`` spread over
    the sockets). Request and error counts do not depend on it (they are HAProxy's own
    per-server counters); only latency is measured on the sampled lines, and windows
    carry the ratio. Pick it from the expected peak rate: a few hundred lines per second
    cost the agent little, 10,000 a lot (bench/request_metrics.py)."""
    hold_script: str = ""
    """The Lua file that holds requests to collected units (agent/dataplane/wake_hold.py);
    "" holds nothing."""
    log_bucket_s: float = 1.0
    """Width of one time bucket of the request windows."""
    log_retention_s: float = 900.0
    """How much request history is kept per (unit, version, instance)."""
    drain_timeout_s: float = 30.0
    """Default wait for a draining server's sessions to reach zero."""
    drain_poll_s: float = 0.2
    """How often a drain looks at the server's sessions."""
    watch_interval_s: float = 0.5
    """How often the watcher checks that HAProxy is alive."""
    command_timeout_s: float = 10.0
    """Longest wait for one admin or master socket exchange."""
    reload_timeout_s: float = 15.0
    """Longest wait for a reload to produce a serving worker."""

    def __post_init__(self) -> None:
        positive = {
            "retries": self.retries,
            "check_inter_ms": self.check_inter_ms,
            "check_rise": self.check_rise,
            "check_fall": self.check_fall,
            "pin_slots": self.pin_slots,
        }
        for name, value in positive.items():
            if value < 1:
                raise InvalidArgument(f"data plane setting {name} must be >= 1, got {value}")
        if not 0 <= self.threads <= 64:
            raise InvalidArgument("data plane setting threads must be from 0 (auto) to 64")
        if not 0 <= self.log_sockets <= 32:
            raise InvalidArgument("data plane setting log_sockets must be from 0 (auto) to 32")
        if not 1 <= self.log_sample_every <= 10000:
            raise InvalidArgument("data plane setting log_sample_every must be from 1 to 10000")
        if not self.version_header.replace("-", "").isalnum():
            raise InvalidArgument(f"version header {self.version_header!r} is not a header name")
        if not self.cookie_prefix.replace("_", "").isalnum():
            raise InvalidArgument(f"cookie prefix {self.cookie_prefix!r} is not a cookie name")


@dataclass(frozen=True)
class HaproxyPaths:
    """Files of one agent's HAProxy, all under one directory (e.g. DATA_DIR/haproxy)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def pid_file(self) -> Path:
        return self.root / "haproxy.pid"

    @property
    def admin_socket(self) -> Path:
        return self.root / "admin.sock"

    @property
    def master_socket(self) -> Path:
        return self.root / "master.sock"

    @property
    def state_file(self) -> Path:
        return self.root / "servers.state"

    @property
    def hold_script(self) -> Path:
        return self.root / "wake_hold.lua"

    @property
    def spec_file(self) -> Path:
        """The desired state as JSON (written before anything is changed)."""
        return self.root / "dataplane.json"

    @property
    def running_file(self) -> Path:
        """Skeleton hash of the config the running HAProxy loaded."""
        return self.root / "running.skeleton"

    @property
    def stderr_file(self) -> Path:
        return self.root / "haproxy.stderr"

    @property
    def maps_dir(self) -> Path:
        return self.root / "maps"

    def log_socket(self, index: int) -> Path:
        return self.root / f"requests.{index}.sock"

    def map_file(self, unit: str, kind: str) -> Path:
        return self.maps_dir / f"{unit}.{kind}.map"
