"""Coordinator configuration: defaults, then a TOML file, then LANDLORD_COORDINATOR_* env,
then command-line flags; validated once, frozen.

TOML keys and flags are the field names (flags with dashes: ``--heartbeat-interval 5``);
environment variables are the upper-case names (``LANDLORD_COORDINATOR_ETCD_ENDPOINTS=
127.0.0.1:2379,127.0.0.1:22379``). Lists are comma separated outside TOML. The loader is the
one both daemons share (``common.settings_loader``).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidArgument
from common.metrics_http import (
    COORDINATOR_METRICS_ADDRESS,
    METRICS_SETTINGS,
    MetricsEndpoint,
    check_metrics_listen,
    endpoint_problems,
)
from common.settings import (
    LOG_FORMATS,
    Problem,
    check_host_port,
    check_log_level,
    setting,
    validate,
)
from common.settings_loader import SettingsSpec
from common.transport import COORDINATOR_ADDRESS, ConnectionLimits, TlsSettings, is_loopback

__all__ = ["ENV_PREFIX", "SETTINGS", "CoordinatorConfig", "build_parser", "load_config"]

ENV_PREFIX = "LANDLORD_COORDINATOR_"


def _check_optional_address(value: str) -> str | None:
    return check_host_port(value) if value else None


ETCD_SCHEMES = ("https", "http")
"""How an etcd endpoint may be written: ``https://host:port`` (TLS), ``http://host:port``
(plain) or ``host:port`` (TLS when etcd_ca_file or etcd_cert_file is set, else plain)."""


def split_etcd_endpoint(value: str) -> tuple[str, str]:
    """``(scheme, host:port)``; scheme is '' when the endpoint names none. InvalidArgument
    when it is not one of the forms of ``ETCD_SCHEMES``."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    elif scheme not in ETCD_SCHEMES:
        raise InvalidArgument(f"etcd endpoint {value!r}: the scheme must be https or http",
                              endpoint=value)
    problem = check_host_port(rest.rstrip("/"))
    if problem:
        raise InvalidArgument(f"etcd endpoint {value!r} is not [https://]host:port",
                              endpoint=value)
    return scheme, rest.rstrip("/")


def _check_etcd_endpoints(values: tuple[str, ...]) -> str | None:
    problems = []
    for value in values:
        try:
            split_etcd_endpoint(value)
        except InvalidArgument as exc:
            problems.append(str(exc))
    return "; ".join(problems) or None


def _check_prefix(value: str) -> str | None:
    if not value.startswith("/") or value.rstrip("/") == "":
        return f"must start with '/' and name something, got {value!r}"
    return None


@dataclass(frozen=True)
class CoordinatorConfig:
    """Everything the coordinator daemon needs, validated."""

    id: str = setting("", "coordinator id (empty: hostname-port)", group="server")
    listen: str = setting(COORDINATOR_ADDRESS, "gRPC listen address host:port",
                          check=check_host_port)
    advertise_address: str = setting("", "address agents and the CLI reach (empty: listen)",
                                     check=_check_optional_address)
    etcd_endpoints: tuple[str, ...] = setting(
        ("127.0.0.1:2379",), "etcd endpoints, https://host:port (TLS) or host:port (TLS "
        "when an etcd_*_file is set)", check=_check_etcd_endpoints, group="etcd")
    etcd_prefix: str = setting("/landlord", "key prefix of this cluster in etcd",
                               check=_check_prefix)
    etcd_timeout: float = setting(5.0, "seconds an etcd request may take", gt=0)
    etcd_max_txn_ops: int = setting(128, "etcd's --max-txn-ops, never above it: operations "
                                    "per transaction (a deploy of many replicas takes one "
                                    "transaction per ~30 at 128; raise both on large fleets "
                                    "for fewer)", ge=64)
    etcd_ca_file: str = setting("", "CA bundle that signed etcd's server certificate "
                                    "(empty: the system's; set it, or name an https:// "
                                    "endpoint, to reach etcd over TLS)")
    etcd_cert_file: str = setting("", "client certificate the coordinator shows etcd "
                                      "(etcd --client-cert-auth); with etcd_key_file")
    etcd_key_file: str = setting("", "private key of etcd_cert_file")
    leader_lease_ttl: int = setting(5, "leader lease TTL in seconds (failover time)", ge=2)
    heartbeat_interval: float = setting(10.0, "agents report at least this often (seconds)",
                                        gt=0, group="agents and instances")
    report_interval: float = setting(1.0, "agents batch their deltas this often (seconds)",
                                     gt=0)
    liveness_grace: float = setting(10.0, "seconds a silent host is suspect before it is lost",
                                    ge=0)
    forget_host_after: float = setting(
        86400.0, "seconds a lost host is kept in etcd before its records are removed (once "
        "no instance is placed on it; counted from when it was declared lost, across leader "
        "changes); it registers again as a new host", ge=1)
    rebalance_grace: float = setting(
        180.0, "seconds a running unit's spread may stay uneven (a host holding two or more of "
        "its instances more than another host with room) before it is rebalanced by itself, "
        "one instance at a time; not during its rollout, a host drain, or while a host of "
        "its building is cordoned or not alive (0: only `landlord units rebalance`)", ge=0)
    event_history: int = setting(1000, "events kept in etcd", ge=10)
    port_range_start: int = setting(20000, "first host port assigned to instances", ge=1024,
                                    le=65535)
    port_range_end: int = setting(29999, "last host port assigned to instances", ge=1024,
                                  le=65535)
    stop_grace: float = setting(30.0, "seconds an instance has to stop gracefully", ge=0)
    idle_check_interval: float = setting(
        30.0, "seconds between the leader's idle-unit checks (a unit with an idle timeout and "
        "no request on any host for that long is collected)", gt=0)
    wake_hold: float = setting(
        30.0, "seconds hosts hold requests to a unit being woken before answering 503", gt=0,
        le=600)
    shutdown_grace: float = setting(5.0, "seconds in-flight RPCs get at shutdown", gt=0)
    handshake_timeout: float = setting(
        10.0, "seconds a client has to finish the TLS handshake and the HTTP/2 preface; a "
        "connection that stalls before is closed", gt=0, le=3600, group="limits")
    idle_connection_timeout: float = setting(
        300.0, "seconds a connection with no call in progress stays open (0: forever); a "
        "client reconnects when it next calls", ge=0)
    max_connections: int = setting(
        16384, "gRPC connections open at once (0: no cap); keep it well under the unit's "
        "LimitNOFILE (65536)", ge=0)
    max_streams_per_connection: int = setting(
        100, "calls one connection may have in progress (HTTP/2 streams); a client queues "
        "more", ge=1, le=10000)
    max_calls_per_identity: int = setting(
        64, "calls and streams one client certificate identity may have in progress "
        "(without mutual TLS: one connection); more answer RESOURCE_EXHAUSTED", ge=1)
    max_connections_per_identity: int = setting(
        128, "connections one client certificate identity (without one: one peer address) "
        "may have calls in progress on (0: no cap); a call on one more answers "
        "RESOURCE_EXHAUSTED", ge=0)
    max_publishes_in_flight: int = setting(
        4, "PublishVersion requests read and handled at once (each may be up to 4 MiB), "
        "at most half of them for one identity; more wait for a turn", ge=1)
    max_publishes_waiting: int = setting(
        8, "PublishVersion requests one identity may have waiting for a turn beyond its "
        "share (grpc holds each one's message meanwhile); more answer RESOURCE_EXHAUSTED "
        "at once", ge=0)
    publish_wait: float = setting(
        10.0, "seconds a publish waits for one of those slots before RESOURCE_EXHAUSTED",
        ge=0, le=3600)
    request_read_timeout: float = setting(
        10.0, "seconds a request may take to arrive once its call has its turn (a client "
        "trickling a request holds the turn)", gt=0, le=3600)
    call_deadline: float = setting(
        60.0, "seconds a unary call may run on the coordinator before it answers "
        "DEADLINE_EXCEEDED", gt=0, le=3600)
    tls_ca_file: str = setting("", "CA bundle that signs clients' certificates (mutual TLS; "
                                   "landlord certs init)", group="TLS and registries")
    tls_cert_file: str = setting("", "this coordinator's certificate (landlord certs issue "
                                     "coordinator ID)")
    tls_key_file: str = setting("", "private key of tls_cert_file")
    tls_crl_file: str = setting("", "revocation list of the tls_ca_file CA (landlord certs "
                                    "revoke); re-read on SIGHUP; needs mutual TLS")
    insecure: bool = setting(False, "allow plain text where TLS files are missing (the gRPC "
                                    "port without mutual TLS, etcd without TLS), on loopback "
                                    "addresses only; for development, logged loudly")
    registry_auth_file: str = setting("", "Docker config.json-style registry credentials used "
                                          "to resolve image tags to digests; empty: anonymous")
    registry_ca_file: str = setting("", "CA bundle for registries served over TLS (empty: the "
                                        "system's)")
    registry_http: tuple[str, ...] = setting((), "registries host:port reached over plain "
                                                 "HTTP only (a loopback one not listed: "
                                                 "HTTPS first, then plain HTTP)")
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR", check=check_log_level,
                             group="daemon")
    log_format: str = setting("json", "json (one object a line) or text", choices=LOG_FORMATS)
    metrics_listen: str = setting(COORDINATOR_METRICS_ADDRESS, "host:port of the Prometheus "
                                  "/metrics endpoint (empty: off; off loopback it needs "
                                  "metrics_tls_cert_file)", check=check_metrics_listen,
                                  group="metrics")
    metrics_tls_cert_file: str = setting("", "certificate of the metrics endpoint (HTTPS)")
    metrics_tls_key_file: str = setting("", "private key of metrics_tls_cert_file")
    metrics_tls_ca_file: str = setting("", "CA bundle scrapers' client certificates must be "
                                           "signed by (empty: no client certificate asked)")

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", f"{socket.gethostname()}-{self.listen.rsplit(':')[-1]}")
        validate(self, "coordinator", _rules(self))

    @property
    def advertise(self) -> str:
        return self.advertise_address or self.listen

    @property
    def tls(self) -> TlsSettings:
        return TlsSettings(ca_file=self.tls_ca_file, cert_file=self.tls_cert_file,
                           key_file=self.tls_key_file)

    @property
    def mutual_tls(self) -> bool:
        """Clients must show a certificate of tls_ca_file; the authz interceptor is on."""
        return bool(self.tls_ca_file and self.tls_cert_file and self.tls_key_file)

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            handshake_timeout_ms=max(1, round(self.handshake_timeout * 1000)),
            idle_timeout_ms=round(self.idle_connection_timeout * 1000),
            max_connections=self.max_connections,
            max_streams_per_connection=self.max_streams_per_connection)

    @property
    def metrics_endpoint(self) -> MetricsEndpoint:
        return MetricsEndpoint.of(*(getattr(self, name) for name in METRICS_SETTINGS))

    @property
    def etcd_tls(self) -> TlsSettings:
        """How to reach etcd: TLS files (all empty: TLS only for https:// endpoints)."""
        return TlsSettings(ca_file=self.etcd_ca_file, cert_file=self.etcd_cert_file,
                           key_file=self.etcd_key_file)


def _rules(cfg: CoordinatorConfig) -> list[Problem]:
    """What involves more than one setting."""
    out: list[Problem] = []
    if not cfg.etcd_endpoints:
        out.append(Problem("etcd_endpoints: at least one endpoint is needed",
                           ("etcd_endpoints",)))
    if cfg.port_range_start > cfg.port_range_end:
        out.append(Problem("port range must satisfy port_range_start <= port_range_end",
                           ("port_range_start", "port_range_end")))
    try:
        cfg.tls  # noqa: B018  # validates the files
    except InvalidArgument as exc:
        out.append(Problem(str(exc), ("tls_ca_file", "tls_cert_file", "tls_key_file")))
    if cfg.tls_crl_file and not cfg.mutual_tls:
        out.append(Problem("tls_crl_file needs mutual TLS (tls_ca_file, tls_cert_file and "
                           "tls_key_file)", ("tls_crl_file", "tls_ca_file")))
    elif cfg.tls_crl_file and not Path(cfg.tls_crl_file).is_file():
        out.append(Problem(f"tls_crl_file {cfg.tls_crl_file!r} does not exist",
                           ("tls_crl_file",)))
    out += [Problem(message, METRICS_SETTINGS) for message in
            endpoint_problems(*(getattr(cfg, name) for name in METRICS_SETTINGS))]
    etcd_files = ("etcd_ca_file", "etcd_cert_file", "etcd_key_file")
    try:
        etcd_tls = cfg.etcd_tls
    except InvalidArgument as exc:
        message = str(exc).removeprefix("TLS ")  # the fields as this config names them
        for name in ("ca_file", "cert_file", "key_file"):
            message = message.replace(name, f"etcd_{name}")
        out.append(Problem(f"etcd TLS: {message}", etcd_files))
    else:
        plain = [e for e in cfg.etcd_endpoints if e.startswith("http://")]
        if etcd_tls.enabled and plain:
            out.append(Problem(f"etcd endpoints {', '.join(plain)} say http:// but etcd TLS "
                               "files are set; write https:// or host:port",
                               ("etcd_endpoints", *etcd_files)))
        else:
            out += _plain_text_problems(cfg, plain if etcd_tls.enabled else [
                e for e in cfg.etcd_endpoints if not e.startswith("https://")])
    return out


def _plain_text_problems(cfg: CoordinatorConfig, plain_etcd: list[str]) -> list[Problem]:
    """TLS unless ``insecure``, and plain text only on loopback (docs/security.md)."""
    out: list[Problem] = []
    if not cfg.mutual_tls and not cfg.insecure:
        out.append(Problem(
            "mutual TLS is required: set tls_ca_file, tls_cert_file and tls_key_file (make "
            "them with `landlord certs`, see docs/security.md), or insecure = true for plain "
            "text on loopback", ("tls_ca_file", "tls_cert_file", "tls_key_file", "insecure")))
    elif not cfg.mutual_tls and not is_loopback(cfg.listen):
        out.append(Problem(f"insecure = true serves plain text, which is refused on "
                           f"{cfg.listen}: listen on a loopback address or set the tls_* "
                           "files", ("listen", "insecure")))
    if plain_etcd and not cfg.insecure:
        out.append(Problem(
            f"etcd {', '.join(plain_etcd)} would be reached in plain text: set etcd_ca_file, "
            "etcd_cert_file and etcd_key_file (etcd with --client-cert-auth), or insecure = "
            "true for plain text on loopback", ("etcd_endpoints", "etcd_ca_file", "insecure")))
    elif remote := [e for e in plain_etcd if not is_loopback(e)]:
        out.append(Problem(f"insecure = true reaches etcd in plain text, which is refused for "
                           f"{', '.join(remote)}: set the etcd_* TLS files",
                           ("etcd_endpoints", "insecure")))
    return out


SETTINGS = SettingsSpec(
    CoordinatorConfig, section="coordinator", program="landlord-coordinator",
    description="Landlord coordinator: cluster state in etcd, agent streams, admin API.")


def build_parser() -> argparse.ArgumentParser:
    return SETTINGS.parser()


def load_config(argv: Sequence[str] | None = None,
                env: Mapping[str, str] | None = None) -> CoordinatorConfig:
    """Defaults < TOML (--config or LANDLORD_COORDINATOR_CONFIG) < environment < flags;
    raises ConfigInvalid listing every problem."""
    environ = os.environ if env is None else env
    return SETTINGS.from_argv(argv, environ)
