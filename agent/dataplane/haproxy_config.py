"""Render the HAProxy configuration and map files from a DataPlaneSpec (pure).

Per unit::

    frontend fe.<unit>            bind <advertise>:<port>, one JSON log line per request
        X-Landlord-Version: v  -> pin map    -> pin<i>.<unit> (that version's servers only)
        cookie LLV_<unit>=v    -> sticky map -> pin<i>.<unit> (empty unless sticky)
        otherwise              -> be.<unit>  (every instance, weighted roundrobin)
    backend be.<unit>, pin0.<unit> .. pin<n-1>.<unit>

Maps are edited at runtime (``add/set/del map``), servers and weights too, so a
version or an instance coming or going needs no reload; only a new unit (frontend)
or more pin backends do. The *skeleton* is the config without its server lines:
when the skeleton of the wanted config differs from the running one, a reload is due.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from agent.dataplane.model import (
    DataPlaneSpec,
    ServerSpec,
    ServerState,
    UnitSpec,
    backend_name,
    frontend_name,
)
from agent.dataplane.settings import DataPlaneSettings, HaproxyPaths, threads_for_host
from agent.dataplane.wake_hold import hold_rule

EXPORTER_FRONTEND = "landlord-haproxy-metrics"
"""The frontend of HAProxy's Prometheus exporter (no unit is named like it: unit
frontends are ``fe.<unit>``)."""

__all__ = [
    "EXPORTER_FRONTEND",
    "MAP_KINDS",
    "RenderedConfig",
    "check_args",
    "render_config",
    "render_map",
    "unit_map_files",
]

MAP_KINDS = ("pin", "sticky", "version")
SKELETON_MARK = "# landlord-skeleton "


@dataclass(frozen=True)
class RenderedConfig:
    text: str
    skeleton_hash: str
    maps: dict[Path, str]
    """Map file path -> content, for every unit."""


def check_args(settings: DataPlaneSettings) -> str:
    """Health check keywords shared by config server lines and ``add server``."""
    return (
        f"check inter {settings.check_inter_ms} "
        f"rise {settings.check_rise} fall {settings.check_fall}"
    )


def unit_map_files(unit: UnitSpec, paths: HaproxyPaths) -> dict[Path, dict[str, str]]:
    return {
        paths.map_file(unit.name, "pin"): unit.pin_map(),
        paths.map_file(unit.name, "sticky"): unit.sticky_map(),
        paths.map_file(unit.name, "version"): unit.version_map(),
    }


def render_map(entries: dict[str, str]) -> str:
    return "".join(f"{key} {entries[key]}\n" for key in sorted(entries))


def render_config(
    spec: DataPlaneSpec, paths: HaproxyPaths, settings: DataPlaneSettings
) -> RenderedConfig:
    skeleton: list[str] = [*_global(paths, settings), *_defaults(settings),
                           *_exporter(settings)]
    full: list[str] = list(skeleton)
    maps: dict[Path, str] = {}
    for name in sorted(spec.units):
        unit = spec.units[name]
        frontend = _frontend(unit, spec.advertise, paths, settings)
        skeleton += frontend
        full += frontend
        for backend, members in unit.backends().items():
            head = _backend_head(backend, unit, settings)
            skeleton += head
            full += head
            full += [_server_line(server, weight, settings) for server, weight in members]
            full.append("")
        maps.update(
            {path: render_map(entries) for path, entries in unit_map_files(unit, paths).items()}
        )
    digest = hashlib.sha256("\n".join(skeleton).encode()).hexdigest()[:16]
    header = [
        "# Written by the Landlord agent on every change; edits here are overwritten.",
        f"{SKELETON_MARK}{digest}",
    ]
    return RenderedConfig("\n".join([*header, *full]) + "\n", digest, maps)


def _global(paths: HaproxyPaths, settings: DataPlaneSettings) -> list[str]:
    # No chroot and no user switch: one instance per agent, run as the agent's user.
    return [
        "global",
        "    master-worker",
        f"    nbthread {settings.threads or threads_for_host()}",
        f"    pidfile {paths.pid_file}",
        f"    stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    server-state-file {paths.state_file}",
        f"    hard-stop-after {settings.hard_stop_after_s}s",
        *([f"    lua-load {settings.hold_script}"] if settings.hold_script else []),
        "",
    ]


def _defaults(settings: DataPlaneSettings) -> list[str]:
    return [
        "defaults",
        "    mode http",
        "    option redispatch",
        f"    retries {settings.retries}",
        "    option dontlognull",
        # after a reload the old worker answers the next request on each idle keep-alive
        # connection with "Connection: close" instead of closing it under the client
        "    option idle-close-on-response",
        "    load-server-state-from-file global",
        f"    timeout connect {settings.connect_timeout_ms}ms",
        f"    timeout client {settings.client_timeout_ms}ms",
        f"    timeout server {settings.server_timeout_ms}ms",
        f"    timeout check {settings.connect_timeout_ms}ms",
        f"    timeout queue {settings.connect_timeout_ms}ms",
        "",
    ]


def _exporter(settings: DataPlaneSettings) -> list[str]:
    """HAProxy's own Prometheus exporter (built into Debian's 2.6), when asked for."""
    if not settings.metrics_listen:
        return []
    return [
        f"frontend {EXPORTER_FRONTEND}",
        f"    bind {settings.metrics_listen}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    http-request deny deny_status 404",
        "",
    ]


def _log_format(unit: UnitSpec, version_map: Path) -> str:
    # Every value is either a number, a name we validated, or a HAProxy token made of
    # safe characters, so the line is valid JSON without escaping.
    fields = [
        f'"u":"{unit.name}"',
        '"b":"%b"',
        '"s":"%s"',
        f'"v":"%[srv_name,map({version_map})]"',
        '"st":%ST',
        '"ta":%Ta',
        '"tr":%Tr',
        '"ts":"%ts"',
    ]
    return "'{" + ",".join(fields) + "}'"


def _frontend(
    unit: UnitSpec, advertise: str, paths: HaproxyPaths, settings: DataPlaneSettings
) -> list[str]:
    pin_map = paths.map_file(unit.name, "pin")
    sticky_map = paths.map_file(unit.name, "sticky")
    version_map = paths.map_file(unit.name, "version")
    count = settings.log_sockets
    lines = [f"frontend {frontend_name(unit.name)}", f"    bind {advertise}:{unit.port}"]
    # socket i takes line i of every count * log_sample_every: one line in log_sample_every
    period = count * settings.log_sample_every
    for index in range(count):
        sample = f" sample {index + 1}:{period}" if period > 1 else ""
        lines.append(f"    log {paths.log_socket(index)} len 4096 format raw{sample} local0 info")
    lines += [
        f"    log-format {_log_format(unit, version_map)}",
        f"    http-request set-var(txn.ll_hdr) req.hdr({settings.version_header}),map({pin_map})",
        "    http-request set-var(txn.ll_pin) var(txn.ll_hdr) if { var(txn.ll_hdr) -m found }",
    ]
    # Stickiness is always in the config and switched by the sticky map alone (empty while
    # the unit is not sticky), so turning it on or off is a runtime map edit, never a
    # reload (a reload as a sticky canary ends would race the canary's removal).
    cookie = f"{settings.cookie_prefix}{unit.name}"
    lines += [
        f"    http-request set-var(txn.ll_cookie) req.cook({cookie})",
        "    http-request set-var(txn.ll_pin) var(txn.ll_cookie),"
        f"map({sticky_map}) if !{{ var(txn.ll_pin) -m found }}",
    ]
    if unit.retry_after_s:
        # a paused unit: every server is in maintenance, so HAProxy answers 503 at once;
        # http-after-response reaches HAProxy's own responses too
        lines.append(f"    http-after-response set-header Retry-After {unit.retry_after_s}"
                     " if { status 503 }")
    lines += [
        "    use_backend %[var(txn.ll_pin)] if { var(txn.ll_pin) -m found }",
        f"    default_backend {backend_name(unit.name)}",
    ]
    lines += [
        f"    http-response set-var(txn.ll_ver) srv_name,map({version_map})",
        # (re)issue the cookie when the serving version is in the sticky map (so only while
        # the unit is sticky) and differs from the client's, but never for header-pinned
        # requests: a preview must not stick
        f'    http-response add-header Set-Cookie "{cookie}=%[var(txn.ll_ver)]; Path=/"'
        f" if {{ var(txn.ll_ver),map({sticky_map}) -m found }} !{{ var(txn.ll_hdr) -m found }}"
        " !{ var(txn.ll_ver),strcmp(txn.ll_cookie) eq 0 }",
    ]
    return [*lines, ""]


def _backend_head(backend: str, unit: UnitSpec, settings: DataPlaneSettings) -> list[str]:
    return [
        f"backend {backend}",
        "    balance roundrobin",
        f"    option httpchk GET {unit.health_path}",
        # A stopping instance may close an idle keep-alive connection just as a request
        # is sent on it; resend such requests elsewhere instead of answering 502, but
        # only idempotent ones (GET/HEAD): a POST may have been processed.
        "    retry-on conn-failure empty-response",
        "    http-request disable-l7-retry if !METH_GET",
        # no usable server: held while a collected unit wakes (agent/dataplane/wake_hold.py)
        *([hold_rule()] if settings.hold_script else []),
    ]


def _server_line(server: ServerSpec, weight: int, settings: DataPlaneSettings) -> str:
    disabled = " disabled" if server.state is ServerState.MAINT else ""
    return (
        f"    server {server.name} {server.addr}:{server.port} weight {weight} "
        f"{check_args(settings)}{disabled}"
    )
