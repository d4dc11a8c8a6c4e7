"""Agent configuration: TOML file, then LANDLORD_AGENT_* environment, then flags.

One frozen dataclass whose fields document themselves (``common.settings``), loaded by the
loader both daemons share (``common.settings_loader``). Sizes take the forms of
``common.resources`` ("512Mi", "1G"), rates "10mbit", durations seconds. Every problem is
reported at once, one line each.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.errors import InvalidArgument
from common.metrics_http import (
    AGENT_METRICS_ADDRESS,
    METRICS_SETTINGS,
    MetricsEndpoint,
    check_metrics_listen,
    endpoint_problems,
)
from common.recovery import RecoveryPolicy, RetryRule
from common.settings import (
    LOG_FORMATS,
    Problem,
    check_host_ports,
    check_ip,
    check_log_level,
    setting,
    validate,
)
from common.settings_loader import SettingsSpec
from common.transport import TlsSettings, is_loopback

__all__ = ["ENV_PREFIX", "SETTINGS", "AgentConfig", "load_config"]

ENV_PREFIX = "LANDLORD_AGENT_"


def _opt(default: Any, help_text: str, kind: str = "", **limits: Any) -> Any:
    """A setting; numbers are >= 0 unless other limits are given."""
    if isinstance(default, int | float) and not isinstance(default, bool) and not (
            {"ge", "gt", "le"} & set(limits)):
        limits["ge"] = 0
    return setting(default, help_text, kind, **limits)


def _check_labels(labels: tuple[str, ...]) -> str | None:
    bad = [item for item in labels if "=" not in item or not item.split("=", 1)[0]]
    return "; ".join(f"label {item!r} must be KEY=VALUE" for item in bad) or None


def _check_subnet(value: str) -> str | None:
    try:
        net = ipaddress.IPv4Network(value)
    except ValueError:
        return f"{value!r} is not an IPv4 network such as 192.0.2.0/24"
    return None if net.prefixlen <= 29 else f"{value!r} is too small (at most /29)"


def _check_interface(value: str) -> str | None:
    ok = _INTERFACE.fullmatch(value)
    return None if ok else f"{value!r} is not an interface name (1-15 of a-z A-Z 0-9 _ . -)"


_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent daemon needs, validated."""

    host_id: str = _opt("", "id of this host, unique in the fleet (empty: this machine's "
                            "hostname)", group="host")
    building: str = _opt("default", "building (host pool) this host belongs to")
    advertise_address: str = _opt("127.0.0.1", "IP address instances bind to and are reached "
                                                "at: this host's address on the fleet network",
                                  check=check_ip)
    coordinators: tuple[str, ...] = _opt((), "coordinator addresses host:port (comma "
                                             "separated outside TOML; empty: run standalone)",
                                         check=check_host_ports)
    docker_url: str = _opt("unix:///var/run/docker.sock", "Docker Engine API address")
    data_dir: Path = _opt(Path("/var/lib/landlord-agent"),  # noqa: RUF009 (Path is immutable)
                          "records, dumps, backups, state")
    run_dir: Path = _opt(Path("/run/landlord-agent"),  # noqa: RUF009
                         "runtime files (bpf filesystem)")
    cgroup_root: Path = _opt(Path("/sys/fs/cgroup"),  # noqa: RUF009
                             "where cgroup hierarchies are mounted")
    reserved_cpu: float = _opt(0.5, "cores kept for the host itself (2, 0.5, 500m)", "cpu")
    reserved_memory: int = _opt(512 * 1024 * 1024, "memory kept for the host itself (bytes or "
                                                   "512Mi, 1G)", "bytes")
    reserved_storage: int = _opt(2 * 1024**3, "disk kept for the host itself (bytes or 2Gi)",
                                 "bytes")
    network_capacity: int = _opt(1_000_000_000, "egress bits/s this host offers (or 10mbit, "
                                                "1gbit)", "bits")
    labels: tuple[str, ...] = _opt((), "extra labels KEY=VALUE on every container",
                                   check=_check_labels)
    tls_ca_file: str = _opt("", "CA bundle that signs the coordinators' certificate",
                            group="coordinator stream and data plane")
    tls_cert_file: str = _opt("", "this host's certificate (landlord certs issue agent "
                                  "HOST_ID)")
    tls_key_file: str = _opt("", "private key of tls_cert_file")
    insecure: bool = _opt(False, "allow a plain-text stream (no tls_* files) to loopback "
                                 "coordinators only; for development, logged loudly")
    data_plane: bool = _opt(True, "run this host's HAProxy data plane (unit entry points)")
    registry_auth_file: str = _opt("", "Docker config.json-style registry credentials "
                                       "({\"auths\": {\"HOST:PORT\": {\"auth\": "
                                       "base64(user:pass)}}}); empty: pull anonymously")
    image_pull_timeout: float = _opt(600.0, "seconds an image pull may take before the start "
                                            "that needs it fails", gt=0)
    haproxy_binary: str = _opt("/usr/sbin/haproxy", "the HAProxy 2.6+ executable")
    haproxy_metrics_listen: str = _opt("", "loopback host:port where this host's HAProxy "
                                           "serves its own Prometheus exporter at /metrics "
                                           "(empty: off)", check=check_metrics_listen)
    request_log_sample_every: int = _opt(1, "HAProxy logs one request in this many for "
                                             "latency (request and error counts are exact "
                                             "whatever it is); raise it for high rates",
                                         ge=1, le=10000)
    haproxy_threads: int = _opt(0, "HAProxy worker threads (0: a quarter of the cores, at "
                                   "least one)", ge=0, le=64)
    stop_grace: float = _opt(30.0, "seconds between SIGTERM and SIGKILL on a graceful stop",
                             group="supervision")
    startup_probe_interval: float = _opt(0.1, "seconds between health probes until ready",
                                         gt=0)
    monitor_interval: float = _opt(5.0, "seconds between resource samples", gt=0)
    storage_interval: float = _opt(30.0, "seconds between storage measurements", gt=0)
    memory_pressure_ratio: float = _opt(0.9, "working set / limit that counts as pressure",
                                        gt=0, le=1)
    cpu_throttle_samples: int = _opt(3, "consecutive samples throttled near the CPU limit "
                                        "before a cpu limit_exceeded event (and quiet ones "
                                        "that end the episode)", ge=1, le=1000)
    cpu_throttle_ratio: float = _opt(0.5, "share of CFS periods throttled that counts a "
                                          "sample as throttled", gt=0, le=1)
    cpu_throttle_usage_ratio: float = _opt(0.8, "cores used / CPU limit that counts a "
                                                "sample as near the limit", gt=0, le=1)
    crash_max_retries: int = _opt(3, "retries of a failed crash replacement before escalating",
                                  group="recovery")
    crash_delay: float = _opt(5.0, "seconds x retry before replacing a crashed instance again")
    leak_max_retries: int = _opt(1, "retries of a failed leak restart before escalating")
    leak_delay: float = _opt(0.0, "seconds x retry before restarting a leaking instance again")
    loop_backoff: float = _opt(10.0, "crash-loop wait before the 2nd incident; doubles after")
    loop_backoff_cap: float = _opt(300.0, "longest crash-loop wait")
    healthy_reset: float = _opt(600.0, "seconds healthy after which the incident count resets")
    max_incidents: int = _opt(5, "incidents without a healthy stretch before escalating")
    leak_window: float = _opt(600.0, "seconds of memory samples a leak is judged on")
    leak_min_samples: int = _opt(10, "fewest samples in the window to judge a leak")
    leak_high_water: float = _opt(0.85, "memory working set / limit above which a rising "
                                        "trend is judged a fast leak", gt=0, le=1)
    leak_horizon_periods: float = _opt(6.0, "a fast leak: the short-term trend reaches the "
                                            "memory limit within this many monitor_interval",
                                       gt=0)
    leak_short_samples: int = _opt(5, "samples (the newest) the short-term trend is fitted "
                                      "on", ge=2, le=1000)
    log_tail: int = _opt(200, "log lines kept in a crash dump")
    spare_containers: bool = _opt(False, "keep a created (not started) replacement "
                                         "container per healthy instance: a crash costs a "
                                         "start, not a create (one more container each)")
    gc_idle_interval: float = _opt(1800.0, "seconds between idle-instance collections", gt=0,
                                   group="garbage collection")
    gc_memory_interval: float = _opt(300.0, "seconds between memory optimizations", gt=0)
    gc_cache_interval: float = _opt(3600.0, "seconds between cache evictions", gt=0)
    memory_reclaim_idle: float = _opt(300.0, "idle seconds after which page cache is dropped")
    disk_high_watermark: float = _opt(0.85, "disk use fraction above which eviction starts",
                                      gt=0, le=1)
    disk_low_watermark: float = _opt(0.80, "disk use fraction at which eviction stops (below "
                                           "disk_high_watermark)", gt=0, le=1)
    keep_versions: int = _opt(3, "images of this many latest versions kept per unit", ge=1)
    backup_retention: int = _opt(5, "state backups kept per instance")
    dump_max_age: float = _opt(7 * 86400.0, "seconds after which dumps are deleted")
    stopped_container_max_age: float = _opt(3600.0, "seconds a stopped container is kept")
    wake_port: int = _opt(7481, "port on the advertise address where this host's HAProxy asks "
                                "whether a unit without a usable server is collected (its "
                                "requests are then held while it wakes; 0: never held)",
                          ge=0, le=65535)
    wake_hold: float = _opt(30.0, "seconds a request to a collected unit is held while it wakes "
                                  "(then 503 with Retry-After)", gt=0, le=600)
    wake_queue: int = _opt(100, "requests held at once on this host for waking units (more: "
                                "503 with Retry-After)", ge=1, le=100000)
    bandwidth: bool = _opt(True, "hold instances to their network limit with tc (needs root): "
                                 "bridged ones both ways on their veth, host-network ones on "
                                 "egress only and only with cgroup v1's net_cls",
                           group="limits")
    egress_device: str = _opt("lo", "device carrying host-network instances' egress (bridged "
                                    "ones are shaped on their veth)")
    bridge_network: str = _opt("landlord", "Docker network bridged instances join (created "
                                           "by the agent if missing)", group="network")
    bridge_subnet: str = _opt("198.18.0.0/24", "IPv4 subnet of bridge_network: a range "
                                               "nothing else on the host routes (default from "
                                               "RFC 2544's benchmarking block)",
                              check=_check_subnet)
    bridge_interface: str = _opt("landlord0", "Linux name of bridge_network's bridge (what "
                                              "host firewall rules name)",
                                 check=_check_interface)
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR", check=check_log_level,
                          group="daemon")
    log_format: str = _opt("json", "json (one object a line) or text", choices=LOG_FORMATS)
    watchdog_interval: float = _opt(0.0, "seconds between systemd watchdog pings (0: half of "
                                          "the unit's WatchdogSec)")
    metrics_listen: str = _opt(AGENT_METRICS_ADDRESS, "host:port of the Prometheus /metrics "
                                                      "and the /healthz endpoint (empty: off; "
                                                      "off loopback it needs "
                                                      "metrics_tls_cert_file)",
                               check=check_metrics_listen, group="metrics")
    metrics_tls_cert_file: str = _opt("", "certificate of the metrics endpoint (HTTPS)")
    metrics_tls_key_file: str = _opt("", "private key of metrics_tls_cert_file")
    metrics_tls_ca_file: str = _opt("", "CA bundle scrapers' client certificates must be "
                                        "signed by (empty: no client certificate asked)")

    def __post_init__(self) -> None:
        if not self.host_id:
            object.__setattr__(self, "host_id", socket.gethostname())
        validate(self, "agent", _rules(self))

    def recovery_policy(self) -> RecoveryPolicy:
        return RecoveryPolicy(
            crash=RetryRule(self.crash_max_retries, self.crash_delay),
            leak=RetryRule(self.leak_max_retries, self.leak_delay),
            loop_backoff_s=self.loop_backoff,
            loop_backoff_cap_s=self.loop_backoff_cap,
            healthy_reset_s=self.healthy_reset,
            max_incidents=max(1, self.max_incidents),
        )

    @property
    def metrics_endpoint(self) -> MetricsEndpoint:
        return MetricsEndpoint.of(*(getattr(self, name) for name in METRICS_SETTINGS))

    @property
    def label_map(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.labels)

    def with_changes(self, **changes: Any) -> AgentConfig:
        return replace(self, **changes)


def _rules(cfg: AgentConfig) -> list[Problem]:
    """What involves more than one setting."""
    out: list[Problem] = []
    if not cfg.disk_low_watermark < cfg.disk_high_watermark:
        out.append(Problem("need disk_low_watermark < disk_high_watermark",
                           ("disk_low_watermark", "disk_high_watermark")))
    tls = ("tls_ca_file", "tls_cert_file", "tls_key_file")
    try:
        TlsSettings(ca_file=cfg.tls_ca_file, cert_file=cfg.tls_cert_file,
                    key_file=cfg.tls_key_file)
    except InvalidArgument as exc:
        out.append(Problem(str(exc), tls))
    mutual = bool(cfg.tls_ca_file and cfg.tls_cert_file and cfg.tls_key_file)
    if cfg.coordinators and not mutual and not cfg.insecure:
        out.append(Problem(
            "mutual TLS is required to reach coordinators: set tls_ca_file, tls_cert_file "
            "and tls_key_file (landlord certs issue agent HOST_ID, see docs/security.md), or "
            "insecure = true for plain text to loopback coordinators", (*tls, "insecure")))
    elif not mutual and (remote := [c for c in cfg.coordinators if not is_loopback(c)]):
        out.append(Problem(f"insecure = true speaks plain text, which is refused to "
                           f"{', '.join(remote)}: set the tls_* files",
                           ("coordinators", "insecure")))
    out += [Problem(message, METRICS_SETTINGS) for message in
            endpoint_problems(*(getattr(cfg, name) for name in METRICS_SETTINGS))]
    if cfg.haproxy_metrics_listen and not is_loopback(cfg.haproxy_metrics_listen):
        out.append(Problem(f"haproxy_metrics_listen {cfg.haproxy_metrics_listen!r} must be a "
                           "loopback address (HAProxy's exporter is served without TLS)",
                           ("haproxy_metrics_listen",)))
    return out


SETTINGS = SettingsSpec(
    AgentConfig, section="agent", program="landlord-agent",
    description="Landlord per-host agent: runs unit instances in Docker with limits, health "
                "checks, crash recovery and garbage collection.")


def load_config(
    toml_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Merge the TOML file (table [agent] or top level), environment and flags, in order."""
    return SETTINGS.load(toml_path, environ, flags)
