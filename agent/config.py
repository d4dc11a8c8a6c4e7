"""Agent configuration: TOML file, then LANDLORD_AGENT_* environment, then flags.

One frozen dataclass, validated once with messages that name the bad setting. Sizes take
the forms of ``common.resources`` ("512Mi", "1G"), rates "10mbit", durations seconds.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from common.errors import InvalidArgument, LandlordError
from common.recovery import RecoveryPolicy, RetryRule
from common.resources import parse_bandwidth, parse_bytes, parse_cpu

__all__ = ["ENV_PREFIX", "AgentConfig", "config_fields", "load_config"]

ENV_PREFIX = "LANDLORD_AGENT_"


def _opt(default: Any, help_text: str, kind: str = "") -> Any:
    return field(default=default, metadata={"help": help_text, "kind": kind})


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent daemon needs, validated."""

    host_id: str = _opt("", "id of this host (required)")
    building: str = _opt("default", "building (host pool) this host belongs to")
    advertise_address: str = _opt("127.0.0.1", "IP address instances bind to and are reached at")
    coordinators: tuple[str, ...] = _opt((), "coordinator addresses host:port, comma separated",
                                         "list")
    docker_url: str = _opt("unix:///var/run/docker.sock", "Docker Engine API address")
    data_dir: Path = _opt(Path("/var/lib/landlord-agent"),  # noqa: RUF009 (Path is immutable)
                          "records, dumps, backups, state", "path")
    run_dir: Path = _opt(Path("/run/landlord-agent"),  # noqa: RUF009
                         "runtime files (bpf filesystem)", "path")
    cgroup_root: Path = _opt(Path("/sys/fs/cgroup"),  # noqa: RUF009
                             "where cgroup hierarchies are mounted", "path")
    reserved_cpu: float = _opt(0.5, "cores kept for the host itself", "cpu")
    reserved_memory: int = _opt(512 * 1024 * 1024, "memory kept for the host itself", "bytes")
    reserved_storage: int = _opt(2 * 1024**3, "disk kept for the host itself", "bytes")
    network_capacity: int = _opt(1_000_000_000, "egress bits/s this host offers", "bits")
    labels: tuple[str, ...] = _opt((), "extra labels KEY=VALUE on every container", "list")
    # coordinator stream and data plane
    tls_ca_file: str = _opt("", "CA bundle that signs the coordinators' certificate (empty: "
                                "insecure)")
    tls_cert_file: str = _opt("", "this agent's client certificate for mutual TLS")
    tls_key_file: str = _opt("", "this agent's client private key")
    data_plane: bool = _opt(True, "run this host's HAProxy data plane (unit entry points)",
                            "bool")
    registry_auth_file: str = _opt("", "Docker config.json-style registry credentials "
                                       "({\"auths\": {\"HOST:PORT\": {\"auth\": "
                                       "base64(user:pass)}}}); empty: pull anonymously")
    image_pull_timeout: float = _opt(600.0, "seconds an image pull may take before the start "
                                            "that needs it fails")
    haproxy_binary: str = _opt("/usr/sbin/haproxy", "the HAProxy 2.6+ executable")
    haproxy_threads: int = _opt(0, "HAProxy worker threads (0: a quarter of the cores, at "
                                   "least one)")
    # supervision
    stop_grace: float = _opt(30.0, "seconds between SIGTERM and SIGKILL on a graceful stop")
    startup_probe_interval: float = _opt(0.1, "seconds between health probes until ready")
    monitor_interval: float = _opt(5.0, "seconds between resource samples")
    storage_interval: float = _opt(30.0, "seconds between storage measurements")
    memory_pressure_ratio: float = _opt(0.9, "working set / limit that counts as pressure")
    # recovery
    crash_max_retries: int = _opt(3, "retries of a failed crash replacement before escalating")
    crash_delay: float = _opt(5.0, "seconds x retry before replacing a crashed instance again")
    leak_max_retries: int = _opt(1, "retries of a failed leak restart before escalating")
    leak_delay: float = _opt(0.0, "seconds x retry before restarting a leaking instance again")
    loop_backoff: float = _opt(10.0, "crash-loop wait before the 2nd incident; doubles after")
    loop_backoff_cap: float = _opt(300.0, "longest crash-loop wait")
    healthy_reset: float = _opt(600.0, "seconds healthy after which the incident count resets")
    max_incidents: int = _opt(5, "incidents without a healthy stretch before escalating")
    leak_window: float = _opt(600.0, "seconds of memory samples a leak is judged on")
    leak_min_samples: int = _opt(10, "fewest samples in the window to judge a leak")
    log_tail: int = _opt(200, "log lines kept in a crash dump")
    # garbage collection
    gc_idle_interval: float = _opt(1800.0, "seconds between idle-instance collections")
    gc_memory_interval: float = _opt(300.0, "seconds between memory optimizations")
    gc_cache_interval: float = _opt(3600.0, "seconds between cache evictions")
    memory_reclaim_idle: float = _opt(300.0, "idle seconds after which page cache is dropped")
    disk_high_watermark: float = _opt(0.85, "disk use fraction above which eviction starts")
    disk_low_watermark: float = _opt(0.80, "disk use fraction at which eviction stops")
    keep_versions: int = _opt(3, "images of this many latest versions kept per unit")
    backup_retention: int = _opt(5, "state backups kept per instance")
    dump_max_age: float = _opt(7 * 86400.0, "seconds after which dumps are deleted")
    stopped_container_max_age: float = _opt(3600.0, "seconds a stopped container is kept")
    # limits
    bandwidth: bool = _opt(True, "shape egress per instance with tc (needs root)", "bool")
    egress_device: str = _opt("lo", "device carrying instance egress (lo for host networking)")
    # daemon
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _opt("json", "json or text")
    watchdog_interval: float = _opt(0.0, "seconds between watchdog pings (0: from WATCHDOG_USEC)")

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise InvalidArgument("invalid agent configuration: " + "; ".join(problems),
                                  problems=problems)

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
    def label_map(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.labels)

    def with_changes(self, **changes: Any) -> AgentConfig:
        return replace(self, **changes)


def _problems(cfg: AgentConfig) -> list[str]:
    out: list[str] = []
    if not cfg.host_id:
        out.append("host_id is required (flag --host-id, env LANDLORD_AGENT_HOST_ID)")
    try:
        ipaddress.ip_address(cfg.advertise_address)
    except ValueError:
        out.append(f"advertise_address {cfg.advertise_address!r} is not an IP address")
    for item in cfg.labels:
        if "=" not in item or not item.split("=", 1)[0]:
            out.append(f"label {item!r} must be KEY=VALUE")
    for addr in cfg.coordinators:
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            out.append(f"coordinator {addr!r} must be host:port")
    if bool(cfg.tls_cert_file) != bool(cfg.tls_key_file):
        out.append("tls_cert_file and tls_key_file go together (both or neither)")
    if not 0 < cfg.disk_low_watermark < cfg.disk_high_watermark <= 1:
        out.append("need 0 < disk_low_watermark < disk_high_watermark <= 1")
    if not 0 < cfg.memory_pressure_ratio <= 1:
        out.append("memory_pressure_ratio must be in (0, 1]")
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            out.append(f"{f.name} must be >= 0, got {value}")
    for name in ("monitor_interval", "storage_interval", "gc_idle_interval",
                 "gc_memory_interval", "gc_cache_interval", "startup_probe_interval"):
        if getattr(cfg, name) <= 0:
            out.append(f"{name} must be > 0")
    if cfg.haproxy_threads > 64:
        out.append(f"haproxy_threads must be 0 (auto) to 64, got {cfg.haproxy_threads}")
    if cfg.keep_versions < 1:
        out.append("keep_versions must be >= 1")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        out.append(f"log_level {cfg.log_level!r} is not DEBUG, INFO, WARNING or ERROR")
    if cfg.log_format not in ("json", "text"):
        out.append(f"log_format {cfg.log_format!r} is not json or text")
    return out


def config_fields() -> list[tuple[str, str, Any]]:
    """(name, help, default) of every setting, for flags and docs."""
    return [(f.name, f.metadata["help"], f.default) for f in fields(AgentConfig)]


def _convert(name: str, kind: str, default: Any, raw: Any) -> Any:
    try:
        if kind == "list":
            if isinstance(raw, str):
                return tuple(part.strip() for part in raw.split(",") if part.strip())
            return tuple(str(part) for part in raw)
        if kind == "path":
            return Path(str(raw))
        if kind == "bytes":
            return parse_bytes(raw if isinstance(raw, int) else str(raw), name)
        if kind == "bits":
            return parse_bandwidth(raw if isinstance(raw, int) else str(raw), name)
        if kind == "cpu":
            return parse_cpu(raw if isinstance(raw, int | float) else str(raw), name)
        if kind == "bool" or isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"{raw!r} is not a boolean")
            return text in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except LandlordError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"setting {name}: {exc}", setting=name) from None


def load_config(
    toml_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Merge the TOML file (table [agent] or top level), environment and flags, in order."""
    by_name = {f.name: f for f in fields(AgentConfig)}
    values: dict[str, Any] = {}
    if toml_path is not None:
        try:
            document = tomllib.loads(toml_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidArgument(f"cannot read config file {toml_path}: {exc}") from None
        table = document.get("agent", document)
        unknown = sorted(set(table) - set(by_name))
        if unknown:
            raise InvalidArgument(f"unknown settings in {toml_path}: {', '.join(unknown)}")
        values.update(table)
    for key, raw in (environ or {}).items():
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX):].lower()
            if name not in by_name:
                raise InvalidArgument(f"unknown setting in environment: {key}")
            values[name] = raw
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    converted: dict[str, Any] = {}
    for name, raw in values.items():
        f = by_name[name]
        default = f.default if f.default is not MISSING else None
        converted[name] = _convert(name, f.metadata["kind"], default, raw)
    return AgentConfig(**converted)
