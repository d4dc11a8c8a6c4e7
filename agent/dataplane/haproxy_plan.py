"""Decide the runtime API commands that bring a running HAProxy to a spec (pure).

The running HAProxy is described by ``show servers state`` rows and ``show map``
contents; the plan is the list of admin socket commands to send back-to-back, plus
the servers to delete afterwards (deletion can be refused for a moment while HAProxy
closes idle connections, so the executor retries it).

Order inside a plan: new servers first, then map additions (so a pin never names an
empty backend), state and weight changes together, then map removals, then the
servers to delete go to maintenance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.dataplane.haproxy_config import check_args, unit_map_files
from agent.dataplane.haproxy_output import ServerStateRow
from agent.dataplane.model import DataPlaneSpec, ServerSpec, ServerState, UnitSpec
from agent.dataplane.settings import DataPlaneSettings, HaproxyPaths

__all__ = ["Observed", "RuntimePlan", "expected_observation", "observe_commands", "plan_runtime"]


@dataclass(frozen=True)
class Observed:
    """What the running HAProxy reports for the units of a spec."""

    servers: Sequence[ServerStateRow] = ()
    maps: Mapping[Path, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimePlan:
    commands: tuple[str, ...] = ()
    deletions: tuple[tuple[str, str], ...] = ()
    """(backend, server) pairs to delete once they are in maintenance."""

    @property
    def empty(self) -> bool:
        return not self.commands and not self.deletions


def observe_commands(units: Sequence[UnitSpec], paths: HaproxyPaths) -> list[str]:
    """The ``show`` commands whose replies :func:`plan_runtime` needs, in order."""
    commands: list[str] = []
    for unit in units:
        for backend in unit.backends():
            commands.append(f"show servers state {backend}")
        for path in unit_map_files(unit, paths):
            commands.append(f"show map {path}")
    return commands


_ADMIN_BITS = {ServerState.READY: 0, ServerState.DRAIN: 0x08, ServerState.MAINT: 0x01}


def expected_observation(
    spec: DataPlaneSpec, units: Sequence[str], paths: HaproxyPaths
) -> Observed:
    """What HAProxy reports when it matches ``spec``: lets a change be planned against
    the last applied spec without asking HAProxy first (one round trip less)."""
    rows: list[ServerStateRow] = []
    maps: dict[Path, Mapping[str, str]] = {}
    for name in units:
        unit = spec.units.get(name)
        if unit is None:
            continue
        for backend, members in unit.backends().items():
            rows += [
                ServerStateRow(
                    backend, s.name, s.addr, s.port, 2, _ADMIN_BITS[s.state], weight, weight
                )
                for s, weight in members
            ]
        maps.update(unit_map_files(unit, paths))
    return Observed(rows, maps)


def plan_runtime(
    spec: DataPlaneSpec,
    observed: Observed,
    paths: HaproxyPaths,
    settings: DataPlaneSettings,
    units: Sequence[str] | None = None,
) -> RuntimePlan:
    """Commands that make HAProxy match ``spec`` for ``units`` (default: all units)."""
    adds: list[str] = []
    changes: list[str] = []
    to_maint: list[str] = []
    deletions: list[tuple[str, str]] = []
    map_adds: list[str] = []
    map_dels: list[str] = []
    rows_by_backend: dict[str, dict[str, ServerStateRow]] = {}
    for row in observed.servers:
        rows_by_backend.setdefault(row.backend, {})[row.server] = row
    names = sorted(spec.units) if units is None else list(units)
    for name in names:
        unit = spec.unit(name)
        for backend, members in unit.backends().items():
            running = rows_by_backend.get(backend, {})
            wanted = {server.name for server, _ in members}
            for server, weight in members:
                seen = running.get(server.name)
                if seen is None:
                    adds += _add_server(backend, server, weight, settings)
                else:
                    changes += _align_server(backend, server, weight, seen)
            for extra in sorted(set(running) - wanted):
                if running[extra].admin_state is not ServerState.MAINT:
                    to_maint.append(f"set server {backend}/{extra} state maint")
                deletions.append((backend, extra))
        for path, entries in unit_map_files(unit, paths).items():
            current = observed.maps.get(path, {})
            for key in sorted(entries):
                if key not in current:
                    map_adds.append(f"add map {path} {key} {entries[key]}")
                elif current[key] != entries[key]:
                    map_adds.append(f"set map {path} {key} {entries[key]}")
            map_dels += [f"del map {path} {key}" for key in sorted(set(current) - set(entries))]
    commands = (*adds, *map_adds, *changes, *map_dels, *to_maint)
    return RuntimePlan(commands=commands, deletions=tuple(deletions))


def _add_server(
    backend: str, server: ServerSpec, weight: int, settings: DataPlaneSettings
) -> list[str]:
    # A server added at runtime starts in maintenance with its checks off, and in 2.6
    # without the idle connection pool config servers get (no keep-alive to it).
    target = f"{backend}/{server.name}"
    commands = [
        f"add server {target} {server.addr}:{server.port} weight {weight} {check_args(settings)}"
        " pool-max-conn -1 pool-purge-delay 5s",
        f"enable health {target}",
    ]
    if server.state is not ServerState.MAINT:
        commands.append(f"set server {target} state {server.state.value}")
    return commands


def _align_server(backend: str, server: ServerSpec, weight: int, row: ServerStateRow) -> list[str]:
    target = f"{backend}/{server.name}"
    commands: list[str] = []
    if (row.addr, row.port) != (server.addr, server.port):
        commands.append(f"set server {target} addr {server.addr} port {server.port}")
    if row.weight != weight:
        commands.append(f"set server {target} weight {weight}")
    if row.admin_state is not server.state:
        commands.append(f"set server {target} state {server.state.value}")
    return commands
