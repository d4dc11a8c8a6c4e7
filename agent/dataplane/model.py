"""What the data plane should look like: units, their servers, weights and pinned versions.

Pure values. Every change returns a new spec; the facade persists it (intent first),
renders the HAProxy config from it and plans runtime commands by comparing it with
what HAProxy reports.

Naming in HAProxy (unit names never contain a space, so prefixes are unambiguous):
``fe.<unit>`` frontend, ``be.<unit>`` weighted backend, ``pin<i>.<unit>`` per-version
backends that a request header or a stickiness cookie selects through a map.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from common.errors import InvalidArgument, NotFound
from common.input_bounds import check_path
from common.unit_spec import DEFAULT_HEALTH

__all__ = [
    "MAX_WEIGHT",
    "DataPlaneSpec",
    "ServerSpec",
    "ServerState",
    "UnitSpec",
    "backend_name",
    "frontend_name",
    "pin_backend_name",
]

MAX_WEIGHT = 256
MAX_RETRY_AFTER_S = 86400
"""The longest Retry-After a paused unit's 503 carries (one day)."""
_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_SERVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")


class ServerState(StrEnum):
    """Administrative state of one server in HAProxy."""

    READY = "ready"
    DRAIN = "drain"  # keeps current sessions, gets no new ones
    MAINT = "maint"  # gets nothing; the only state a server can be deleted from


def frontend_name(unit: str) -> str:
    return f"fe.{unit}"


def backend_name(unit: str) -> str:
    return f"be.{unit}"


def pin_backend_name(unit: str, slot: int) -> str:
    return f"pin{slot}.{unit}"


def check_unit_name(unit: str) -> str:
    if not isinstance(unit, str) or not _UNIT.fullmatch(unit):
        raise InvalidArgument(
            f"unit name {unit!r} must be 1-63 of letters, digits, '.', '_', '-'", unit=unit
        )
    return unit


def _check_server(name: str) -> None:
    if not isinstance(name, str) or not _SERVER.fullmatch(name):
        raise InvalidArgument(
            f"server name {name!r} must be 1-100 of letters, digits, '.', '_', ':', '-'",
            server=name,
        )


def _check_version(version: str) -> None:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InvalidArgument(f"version {version!r} is not a valid version tag", version=version)


def check_weight(server: str, weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise InvalidArgument(
            f"weight of {server} must be an integer from 0 to {MAX_WEIGHT}, got {weight!r}",
            server=server,
        )
    return weight


def _check_port(port: int, what: str) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidArgument(f"{what} port must be 1-65535, got {port!r}", port=port)


def _check_ipv4(addr: str) -> None:
    try:
        ipaddress.IPv4Address(addr)
    except (ipaddress.AddressValueError, ValueError) as exc:
        raise InvalidArgument(f"address {addr!r} is not an IPv4 address", addr=addr) from exc


@dataclass(frozen=True)
class ServerSpec:
    """One instance of a unit as a server line in every backend of that unit."""

    name: str
    addr: str
    port: int
    version: str
    weight: int
    state: ServerState = ServerState.READY

    def validate(self) -> None:
        _check_server(self.name)
        _check_ipv4(self.addr)
        _check_port(self.port, "server")
        _check_version(self.version)
        check_weight(self.name, self.weight)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "addr": self.addr,
            "port": self.port,
            "version": self.version,
            "weight": self.weight,
            "state": self.state.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ServerSpec:
        spec = cls(
            name=str(data["name"]),
            addr=str(data["addr"]),
            port=int(str(data["port"])),
            version=str(data["version"]),
            weight=int(str(data["weight"])),
            state=ServerState(str(data.get("state", "ready"))),
        )
        spec.validate()
        return spec


@dataclass(frozen=True)
class UnitSpec:
    """One unit's entry point on this host and every instance behind it."""

    name: str
    port: int
    health_path: str = DEFAULT_HEALTH.path
    sticky: bool = False
    """Keep a client on the version that served it first (cookie) while that version has a
    ready server, whatever its weight (the coordinator turns it on only during a sticky
    rollout's steps, so a canary's stable clients stay on stable at the 100 % step too)."""
    servers: tuple[ServerSpec, ...] = ()
    pins: Mapping[str, int] = field(default_factory=dict)
    """version -> pin backend slot; a slot stays with its version while it has servers."""
    pin_slots: int = 3
    """How many pin backends exist (the config renders them; growing needs a reload)."""
    retry_after_s: int = 0
    """Every instance is paused (issue 17): HAProxy's own 503 (no server usable) carries
    ``Retry-After`` with this many seconds; 0 = no header."""

    def validate(self) -> None:
        check_unit_name(self.name)
        _check_port(self.port, "service")
        # written into "option httpchk GET <path>": the one path rule of common/input_bounds
        check_path("health path", self.health_path)
        if not 0 <= self.retry_after_s <= MAX_RETRY_AFTER_S:
            raise InvalidArgument(f"retry_after_s must be 0..{MAX_RETRY_AFTER_S}, got "
                                  f"{self.retry_after_s}", unit=self.name)
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"duplicate server names in unit {self.name}", unit=self.name)
        for server in self.servers:
            server.validate()

    def server(self, name: str) -> ServerSpec:
        for server in self.servers:
            if server.name == name:
                return server
        raise NotFound(f"unit {self.name} has no server {name}", unit=self.name, server=name)

    def versions(self) -> dict[str, list[ServerSpec]]:
        grouped: dict[str, list[ServerSpec]] = {}
        for server in self.servers:
            grouped.setdefault(server.version, []).append(server)
        return grouped

    def with_server(self, server: ServerSpec) -> UnitSpec:
        """Add or replace ``server``; its version gets a pin slot if it has none."""
        server.validate()
        others = tuple(s for s in self.servers if s.name != server.name)
        servers = tuple(sorted((*others, server), key=lambda s: s.name))
        return self._with_servers(servers)

    def without_server(self, name: str) -> UnitSpec:
        self.server(name)
        return self._with_servers(tuple(s for s in self.servers if s.name != name))

    def with_weights(self, weights: Mapping[str, int]) -> UnitSpec:
        for name, weight in weights.items():
            self.server(name)
            check_weight(name, weight)
        servers = tuple(
            dataclasses.replace(s, weight=weights[s.name]) if s.name in weights else s
            for s in self.servers
        )
        return dataclasses.replace(self, servers=servers)

    def with_state(self, name: str, state: ServerState) -> UnitSpec:
        self.server(name)
        servers = tuple(
            dataclasses.replace(s, state=ServerState(state)) if s.name == name else s
            for s in self.servers
        )
        return dataclasses.replace(self, servers=servers)

    def _with_servers(self, servers: tuple[ServerSpec, ...]) -> UnitSpec:
        live = {s.version for s in servers}
        pins = {v: slot for v, slot in self.pins.items() if v in live}
        slots = self.pin_slots
        for version in sorted(live - pins.keys()):
            free = next(i for i in range(slots + 1) if i not in pins.values())
            pins[version] = free
            slots = max(slots, free + 1)
        return dataclasses.replace(self, servers=servers, pins=pins, pin_slots=slots)

    # What the maps hold; the config renders them to files and the runtime API edits them.

    def pin_map(self) -> dict[str, str]:
        """version -> pin backend, for versions with at least one ready server."""
        ready = {s.version for s in self.servers if s.state is ServerState.READY}
        return {v: pin_backend_name(self.name, slot) for v, slot in self.pins.items() if v in ready}

    def sticky_map(self) -> dict[str, str]:
        """version -> pin backend while sticky: the pin map (versions with a ready server;
        a drained, disabled or removed version's cookie falls back to the weights)."""
        return self.pin_map() if self.sticky else {}

    def version_map(self) -> dict[str, str]:
        """server name -> version (for the request log and the stickiness cookie)."""
        return {s.name: s.version for s in self.servers}

    def backends(self) -> dict[str, list[tuple[ServerSpec, int]]]:
        """Every backend of the unit with (server, weight wanted in that backend)."""
        result: dict[str, list[tuple[ServerSpec, int]]] = {
            backend_name(self.name): [(s, s.weight) for s in self.servers]
        }
        for slot in range(self.pin_slots):
            result[pin_backend_name(self.name, slot)] = []
        for server in self.servers:
            # pinned traffic ignores the split: every server of the version counts equally
            result[pin_backend_name(self.name, self.pins[server.version])].append((server, 1))
        return result

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "port": self.port,
            "health_path": self.health_path,
            "sticky": self.sticky,
            "servers": [s.to_dict() for s in self.servers],
            "pins": dict(self.pins),
            "pin_slots": self.pin_slots,
            "retry_after_s": self.retry_after_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> UnitSpec:
        servers = data.get("servers", [])
        pins = data.get("pins", {})
        if not isinstance(servers, list) or not isinstance(pins, dict):
            raise InvalidArgument("unit spec 'servers' must be a list and 'pins' an object")
        unit = cls(
            name=str(data["name"]),
            port=int(str(data["port"])),
            health_path=str(data.get("health_path", DEFAULT_HEALTH.path)),
            sticky=bool(data.get("sticky", False)),
            servers=tuple(ServerSpec.from_dict(s) for s in servers),
            pins={str(k): int(v) for k, v in pins.items()},
            pin_slots=int(str(data.get("pin_slots", 3))),
            retry_after_s=max(0, int(str(data.get("retry_after_s", 0)))),
        )
        unit.validate()
        return unit._with_servers(unit.servers)


@dataclass(frozen=True)
class DataPlaneSpec:
    """Everything this host's HAProxy should serve."""

    advertise: str
    units: Mapping[str, UnitSpec] = field(default_factory=dict)

    def unit(self, name: str) -> UnitSpec:
        try:
            return self.units[name]
        except KeyError:
            raise NotFound(f"unit {name} is not on this data plane", unit=name) from None

    def with_unit(self, unit: UnitSpec) -> DataPlaneSpec:
        unit.validate()
        for other in self.units.values():
            if other.name != unit.name and other.port == unit.port:
                raise InvalidArgument(
                    f"port {unit.port} is already the entry point of unit {other.name}",
                    unit=unit.name,
                    port=unit.port,
                )
        return dataclasses.replace(self, units={**self.units, unit.name: unit})

    def without_unit(self, name: str) -> DataPlaneSpec:
        self.unit(name)
        return dataclasses.replace(self, units={k: v for k, v in self.units.items() if k != name})

    def to_dict(self) -> dict[str, object]:
        return {
            "advertise": self.advertise,
            "units": [self.units[name].to_dict() for name in sorted(self.units)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DataPlaneSpec:
        units = data.get("units", [])
        if not isinstance(units, list):
            raise InvalidArgument("data plane spec 'units' must be a list")
        advertise = str(data["advertise"])
        _check_ipv4(advertise)
        parsed = [UnitSpec.from_dict(u) for u in units]
        return cls(advertise=advertise, units={u.name: u for u in parsed})
