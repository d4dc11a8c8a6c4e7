"""Resource requirements, their human forms, and per-host capacity accounting.

Accepted forms (case matters only where noted):

- cpu: cores as a number (``2``, ``0.5``) or millicores with ``m`` (``500m`` = 0.5 core).
- memory and storage: bytes (``268435456``), decimal suffixes ``k``/``K``, ``M``, ``G``,
  ``T`` (powers of 1000) or binary ``Ki``, ``Mi``, ``Gi``, ``Ti`` (powers of 1024), each
  optionally followed by ``B`` (``256Mi``, ``1G``, ``512MiB``). A lowercase ``m`` is
  refused because it means milli- in Kubernetes and mebi- in Docker.
- network: bits per second (``1000000``) or ``bit``, ``kbit``, ``mbit``, ``gbit``,
  ``tbit`` (decimal) and ``kibit``, ``mibit``, ``gibit``, ``tibit`` (binary), any case
  (``10Mbit``), as ``tc`` writes them. Byte rates (``bps``) are refused as ambiguous.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from common.errors import Conflict, InsufficientResources, InvalidArgument
from common.input_bounds import quoted

__all__ = [
    "HostLedger",
    "Resources",
    "Shortfall",
    "format_amount",
    "format_bandwidth",
    "format_bytes",
    "format_cpu",
    "parse_bandwidth",
    "parse_bytes",
    "parse_cpu",
]

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_CPU = re.compile(rf"^{_NUMBER}(m?)\Z")
_BYTES = re.compile(rf"^{_NUMBER}\s*([kKMGT]i?)?B?\Z")
_BITS = re.compile(rf"^{_NUMBER}\s*([kmgt]i?)?(bit)?\Z", re.IGNORECASE)
_DECIMAL = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_BINARY = {"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}
_POWERS = {**_DECIMAL, **_BINARY}

CPU_FORMS = "cores as a number (2, 0.5) or millicores (500m)"
BYTE_FORMS = "bytes (268435456) or a size with K, M, G, T, Ki, Mi, Gi or Ti (256Mi, 1G)"
BIT_FORMS = "bits per second (1000000) or a rate with kbit, mbit, gbit (10Mbit, 1gbit)"
_MAX_FORM = 64
"""Characters of an amount's text form: far more than any real amount, and a longer run
of digits would parse to infinity."""


def _form(value: object) -> str | None:
    """The stripped text of ``value`` when it is a string of sensible length."""
    if not isinstance(value, str) or len(value) > _MAX_FORM:
        return None
    return value.strip()


def parse_cpu(value: str | float, field_name: str = "cpu") -> float:
    """Cores (fractional allowed) from ``2``, ``0.5``, ``"0.5"`` or ``"500m"``."""
    if isinstance(value, bool):
        raise _bad(field_name, value, CPU_FORMS)
    if isinstance(value, int | float):
        cores = float(value)
    else:
        text = _form(value)
        match = _CPU.match(text) if text is not None else None
        if match is None:
            raise _bad(field_name, value, CPU_FORMS)
        cores = float(match.group(1)) / (1000.0 if match.group(2) else 1.0)
    if not math.isfinite(cores) or cores < 0:
        raise _bad(field_name, value, CPU_FORMS)
    return cores


def parse_bytes(value: str | int, field_name: str = "memory") -> int:
    """Whole bytes from ``268435456``, ``"256Mi"``, ``"1G"``, ``"512MiB"``."""
    if isinstance(value, bool):
        raise _bad(field_name, value, BYTE_FORMS)
    if isinstance(value, int):
        if value < 0:
            raise _bad(field_name, value, BYTE_FORMS)
        return value
    text = _form(value)
    match = _BYTES.match(text) if text is not None else None
    if match is None:
        ambiguous = text is not None and "m" in text
        raise _bad(field_name, value, BYTE_FORMS + (" ('m' is ambiguous)" if ambiguous else ""))
    return round(float(match.group(1)) * _POWERS[(match.group(2) or "").lower()])


def parse_bandwidth(value: str | int, field_name: str = "network") -> int:
    """Bits per second from ``1000000``, ``"10Mbit"``, ``"1gbit"``, ``"512kibit"``."""
    if isinstance(value, bool):
        raise _bad(field_name, value, BIT_FORMS)
    if isinstance(value, int):
        if value < 0:
            raise _bad(field_name, value, BIT_FORMS)
        return value
    text = _form(value)
    match = _BITS.match(text) if text is not None else None
    if match is None or (match.group(2) and not match.group(3)):
        raise _bad(field_name, value, BIT_FORMS)
    return round(float(match.group(1)) * _POWERS[(match.group(2) or "").lower()])


def _bad(field_name: str, value: object, forms: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field_name}: {quoted(value)} is not valid; write {forms}", field=field_name,
        value=quoted(value)
    )


def format_cpu(cores: float) -> str:
    return f"{cores:g} cores" if cores != 1 else "1 core"


def format_bytes(size: int) -> str:
    for unit, scale in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if abs(size) >= scale:
            return f"{size / scale:.4g}{unit}"
    return f"{size} bytes"


def format_bandwidth(bits: int) -> str:
    for unit, scale in (("Gbit", 1000**3), ("Mbit", 1000**2), ("kbit", 1000)):
        if abs(bits) >= scale:
            return f"{bits / scale:.4g}{unit}"
    return f"{bits} bit/s"


@dataclass(frozen=True)
class Resources:
    """An amount of each resource: a unit's requirement, a host's capacity or free room."""

    cpu: float = 0.0
    """CPU in cores (0.5 = half a core)."""
    memory: int = 0
    """Memory in bytes."""
    storage: int = 0
    """Writable disk in bytes."""
    network: int = 0
    """Network bandwidth in bits per second."""

    def __post_init__(self) -> None:
        # the field names once (not dataclasses.fields per object: placement builds many)
        for name in _RESOURCE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgument(f"{name} must be a number, got {quoted(value)}",
                                      field=name)
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"{name} must be >= 0, got {quoted(value)}",
                                      field=name)
            if name != "cpu" and not isinstance(value, int):
                raise InvalidArgument(
                    f"{name} must be a whole number, got {quoted(value)}", field=name
                )
        # one type per field keeps canonical JSON (and so checksums) stable: 1 and 1.0
        object.__setattr__(self, "cpu", float(self.cpu))

    @classmethod
    def parse(
        cls,
        cpu: str | float = 0.0,
        memory: str | int = 0,
        storage: str | int = 0,
        network: str | int = 0,
    ) -> Resources:
        """Build from human forms (see the module docstring)."""
        return cls(
            cpu=parse_cpu(cpu),
            memory=parse_bytes(memory, "memory"),
            storage=parse_bytes(storage, "storage"),
            network=parse_bandwidth(network),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Resources:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"resources must be a JSON object, got {quoted(data)}")
        unknown = set(data) - set(_RESOURCE_FIELDS)
        if unknown:
            raise InvalidArgument(
                f"unknown resource field(s): {quoted(', '.join(sorted(map(str, unknown))))}; "
                f"known: {', '.join(_RESOURCE_FIELDS)}",
                field=quoted(sorted(map(str, unknown))[0]),
            )
        parts = {key: data[key] for key in _RESOURCE_FIELDS if key in data}
        return cls.parse(**parts)  # type: ignore[arg-type]  # parse validates every type

    def to_dict(self) -> dict[str, float | int]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "storage": self.storage,
            "network": self.network,
        }

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            cpu=self.cpu + other.cpu,
            memory=self.memory + other.memory,
            storage=self.storage + other.storage,
            network=self.network + other.network,
        )

    def minus(self, other: Resources) -> Resources:
        """What is left after ``other`` is taken, floored at zero per dimension."""
        return Resources(
            cpu=max(0.0, round(self.cpu - other.cpu, 9)),
            memory=max(0, self.memory - other.memory),
            storage=max(0, self.storage - other.storage),
            network=max(0, self.network - other.network),
        )

    def shortfalls(self, requested: Resources) -> list[Shortfall]:
        """Each dimension where ``requested`` exceeds this amount."""
        short: list[Shortfall] = []
        for name in _RESOURCE_FIELDS:
            want, have = getattr(requested, name), getattr(self, name)
            # a millionth of a core of slack absorbs float sums of fractional cores
            if want > have + (1e-6 if name == "cpu" else 0):
                short.append(Shortfall(name, want, have))
        return short


_RESOURCE_FIELDS = tuple(f.name for f in fields(Resources))


@dataclass(frozen=True)
class Shortfall:
    """One dimension that does not fit."""

    resource: str
    requested: float
    available: float

    def __str__(self) -> str:
        return (
            f"{self.resource} requested {format_amount(self.resource, self.requested)}, "
            f"available {format_amount(self.resource, self.available)}"
        )


def format_amount(resource: str, amount: float) -> str:
    """An amount of ``resource`` (cpu, memory, storage, network) in a person's units."""
    if resource == "cpu":
        return format_cpu(amount)
    if resource == "network":
        return format_bandwidth(int(amount))
    return format_bytes(int(amount))


@dataclass(frozen=True)
class HostLedger:
    """A host's capacity and what its instances hold. Immutable: changes return a new ledger."""

    host: str
    capacity: Resources
    allocations: Mapping[str, Resources] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocations", MappingProxyType(dict(self.allocations)))

    @property
    def allocated(self) -> Resources:
        total = Resources()
        for held in self.allocations.values():
            total = total + held
        return total

    @property
    def available(self) -> Resources:
        return self.capacity.minus(self.allocated)

    def fits(self, requested: Resources) -> bool:
        return not self.available.shortfalls(requested)

    def reserve(self, instance_id: str, requested: Resources) -> HostLedger:
        """Hold ``requested`` for ``instance_id``.

        Reserving again for the same instance with the same amount changes nothing; with a
        different amount it raises ``Conflict``. Raises ``InsufficientResources`` naming
        every short dimension, what was requested and what is available.
        """
        held = self.allocations.get(instance_id)
        if held is not None:
            if held == requested:
                return self
            raise Conflict(
                f"instance {instance_id} already holds {held.to_dict()} on host {self.host}; "
                "release it before reserving a different amount",
                instance=instance_id,
                host=self.host,
            )
        short = self.available.shortfalls(requested)
        if short:
            raise InsufficientResources(
                f"insufficient resources on host {self.host} for instance {instance_id}: "
                + "; ".join(str(s) for s in short),
                host=self.host,
                instance=instance_id,
                shortfalls=[(s.resource, s.requested, s.available) for s in short],
            )
        return HostLedger(self.host, self.capacity, {**self.allocations, instance_id: requested})

    def release(self, instance_id: str) -> HostLedger:
        """Free what ``instance_id`` holds; releasing an unknown instance changes nothing."""
        if instance_id not in self.allocations:
            return self
        rest = {key: held for key, held in self.allocations.items() if key != instance_id}
        return HostLedger(self.host, self.capacity, rest)
