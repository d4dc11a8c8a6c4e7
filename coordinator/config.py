"""Coordinator configuration: defaults, then a TOML file, then LANDLORD_COORDINATOR_* env,
then command-line flags; validated once, frozen.

TOML keys and flags are the field names (flags with dashes: ``--heartbeat-interval 5``);
environment variables are the upper-case names (``LANDLORD_COORDINATOR_ETCD_ENDPOINTS=
127.0.0.1:2379,127.0.0.1:22379``). Lists are comma separated outside TOML.
"""

from __future__ import annotations

import argparse
import os
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from common.errors import InvalidArgument
from common.transport import COORDINATOR_ADDRESS, TlsSettings

__all__ = ["ENV_PREFIX", "CoordinatorConfig", "build_parser", "load_config"]

ENV_PREFIX = "LANDLORD_COORDINATOR_"


def _doc(default: Any, help_text: str) -> Any:
    if isinstance(default, list | tuple):
        return field(default=tuple(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class CoordinatorConfig:
    id: str = _doc("", "coordinator id (default: hostname-port)")
    listen: str = _doc(COORDINATOR_ADDRESS, "gRPC listen address host:port")
    advertise_address: str = _doc("", "address agents and the CLI reach (default: listen)")
    etcd_endpoints: tuple[str, ...] = _doc(("127.0.0.1:2379",), "etcd endpoints host:port")
    etcd_prefix: str = _doc("/landlord", "key prefix of this cluster in etcd")
    etcd_timeout: float = _doc(5.0, "seconds an etcd request may take")
    etcd_max_txn_ops: int = _doc(128, "etcd's --max-txn-ops (bounds replicas per deploy)")
    leader_lease_ttl: int = _doc(5, "leader lease TTL in seconds (failover time)")
    heartbeat_interval: float = _doc(10.0, "agents report at least this often (seconds)")
    report_interval: float = _doc(1.0, "agents batch their deltas this often (seconds)")
    liveness_grace: float = _doc(10.0, "seconds a silent host is suspect before it is lost")
    event_history: int = _doc(1000, "events kept in etcd")
    port_range_start: int = _doc(20000, "first host port assigned to instances")
    port_range_end: int = _doc(29999, "last host port assigned to instances")
    stop_grace: float = _doc(30.0, "seconds an instance has to stop gracefully")
    shutdown_grace: float = _doc(5.0, "seconds in-flight RPCs get at shutdown")
    tls_ca_file: str = _doc("", "CA bundle for mutual TLS (empty: insecure)")
    tls_cert_file: str = _doc("", "server certificate (empty: insecure)")
    tls_key_file: str = _doc("", "server private key")
    registry_auth_file: str = _doc("", "Docker config.json-style registry credentials used to "
                                       "resolve image tags to digests; empty: anonymous")
    registry_ca_file: str = _doc("", "CA bundle for registries served over TLS (empty: the "
                                     "system's)")
    registry_http: tuple[str, ...] = _doc((), "registries host:port reached over plain HTTP "
                                              "(loopback ones always are)")
    log_level: str = _doc("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _doc("json", "json (one object a line) or text")

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", f"{socket.gethostname()}-{self.listen.rsplit(':')[-1]}")
        for name in ("listen", *(() if not self.advertise_address else ("advertise_address",))):
            _check_address(name, getattr(self, name))
        if not self.etcd_endpoints:
            raise InvalidArgument("etcd_endpoints: at least one endpoint is needed")
        for endpoint in self.etcd_endpoints:
            _check_address("etcd_endpoints", endpoint)
        if not self.etcd_prefix.startswith("/") or self.etcd_prefix.rstrip("/") == "":
            raise InvalidArgument(f"etcd_prefix must start with '/' and name something, "
                                  f"got {self.etcd_prefix!r}")
        for name in ("etcd_timeout", "heartbeat_interval", "report_interval", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"{name} must be > 0, got {getattr(self, name)}")
        if self.liveness_grace < 0 or self.stop_grace < 0:
            raise InvalidArgument("liveness_grace and stop_grace must be >= 0")
        if self.leader_lease_ttl < 2:
            raise InvalidArgument("leader_lease_ttl must be at least 2 seconds")
        if self.etcd_max_txn_ops < 64:
            raise InvalidArgument("etcd_max_txn_ops must be at least 64 (etcd's default: 128)")
        if self.event_history < 10:
            raise InvalidArgument("event_history must be at least 10")
        if not 1024 <= self.port_range_start <= self.port_range_end <= 65535:
            raise InvalidArgument("port range must satisfy 1024 <= start <= end <= 65535")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise InvalidArgument(f"log_level {self.log_level!r} is not a level")
        if self.log_format not in {"json", "text"}:
            raise InvalidArgument("log_format must be json or text")
        self.tls  # noqa: B018  # validates the files

    @property
    def advertise(self) -> str:
        return self.advertise_address or self.listen

    @property
    def tls(self) -> TlsSettings:
        return TlsSettings(ca_file=self.tls_ca_file, cert_file=self.tls_cert_file,
                           key_file=self.tls_key_file)


def _check_address(name: str, value: str) -> None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"{name}: {value!r} is not host:port", field=name)


def _convert(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in ("tuple[str, ...]",):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(v).strip() for v in items if str(v).strip())
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return {"1": True, "true": True, "yes": True, "0": False, "false": False,
                    "no": False}[str(value).lower()]
        return str(value)
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(f"{name}: {value!r} is not a valid {kind}", field=name) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landlord-coordinator",
        description="Landlord coordinator: cluster state in etcd, agent streams, admin API. "
        f"Settings come from --config (TOML), then {ENV_PREFIX}* variables, then flags.",
    )
    parser.add_argument("--config", help="TOML file with any of the settings below")
    for f in fields(CoordinatorConfig):
        default = f.default if f.default is not MISSING else None
        shown = ",".join(default) if isinstance(default, tuple) else default
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                            help=f"{f.metadata.get('help', '')} (default: {shown})")
    return parser


def load_config(argv: Sequence[str] | None = None,
                env: Mapping[str, str] | None = None) -> CoordinatorConfig:
    """Defaults < TOML (--config) < environment < flags."""
    args = build_parser().parse_args(argv)
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    config_path = args.config or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        try:
            data = tomllib.loads(Path(config_path).read_text())
        except FileNotFoundError:
            raise InvalidArgument(f"config file {config_path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"config file {config_path}: {exc}") from None
        known = {f.name for f in fields(CoordinatorConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(f"config file {config_path}: unknown setting(s) "
                                  f"{', '.join(unknown)}")
        values.update(data)
    for f in fields(CoordinatorConfig):
        if ENV_PREFIX + f.name.upper() in environ:
            values[f.name] = environ[ENV_PREFIX + f.name.upper()]
        flag = getattr(args, f.name)
        if flag is not None:
            values[f.name] = flag
    converted = {
        f.name: _convert(f.name, f.type, values[f.name])
        for f in fields(CoordinatorConfig) if f.name in values
    }
    return CoordinatorConfig(**converted)
