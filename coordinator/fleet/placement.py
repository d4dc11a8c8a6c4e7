"""Where new instances go: a pure decision over each host's room (no I/O).

Rules, in order, for each instance to place:

1. Only hosts of the building that are alive, not excluded and not cordoned by an operator
   are candidates (a refusal names the cordoned hosts it skipped: "host h1 is cordoned").
2. A candidate must fit the instance on all four resources (cpu, memory, storage, network)
   after what is already allocated, and have a free port in the port range.
3. Among candidates, the one holding the fewest instances of the same unit and slot wins,
   so two instances of one unit and slot never share a host while another host has room;
   then the one with the most free room (the smaller of its free cpu and memory
   fractions); then the host id, so the decision is deterministic.

All or nothing: when one instance cannot be placed the whole request is refused with
``InsufficientResources`` naming the short resource(s); nothing is reserved.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from common.errors import FailedPrecondition, InsufficientResources, InvalidArgument
from common.resources import HostLedger, Resources, format_amount

__all__ = ["HostRoom", "Placement", "PlacementRequest", "cordon_note", "place"]

RESOURCE_NAMES = ("cpu", "memory", "storage", "network")


@dataclass(frozen=True)
class HostRoom:
    """One host as placement sees it."""

    host_id: str
    capacity: Resources
    allocated: Resources = field(default_factory=Resources)
    """The sum of what the host's instances hold."""
    ports: frozenset[int] = frozenset()
    """Ports already assigned on this host."""
    slots: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    """(apartment, unit, slot) -> instances of it on this host."""
    cordoned: bool = False
    """An operator took the host out of placement (coordinator/fleet/cordons.py)."""

    @classmethod
    def of(cls, ledger: HostLedger, ports: frozenset[int] = frozenset(),
           slots: Mapping[tuple[str, str, str], int] | None = None,
           cordoned: bool = False) -> HostRoom:
        return cls(ledger.host, ledger.capacity, ledger.allocated, ports, dict(slots or {}),
                   cordoned)

    @property
    def available(self) -> Resources:
        return self.capacity.minus(self.allocated)

    def fits(self, wanted: Resources) -> bool:
        return not self.available.shortfalls(wanted)


@dataclass(frozen=True)
class PlacementRequest:
    apartment: str
    unit: str
    slot: str
    resources: Resources
    instance_ids: tuple[str, ...]
    """One new id per instance to place (the caller makes them)."""
    building: str = ""
    exclude_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.instance_ids:
            raise InvalidArgument("placement needs at least one instance", unit=self.unit)
        if len(set(self.instance_ids)) != len(self.instance_ids):
            raise InvalidArgument("instance ids must be distinct", unit=self.unit)


@dataclass(frozen=True)
class Placement:
    instance_id: str
    host_id: str
    port: int


def place(
    request: PlacementRequest,
    hosts: Sequence[HostRoom],
    port_range: tuple[int, int] = (20000, 29999),
) -> list[Placement]:
    """Decide a host and port for each instance of ``request`` (see the module rules)."""
    present = [h for h in hosts if h.host_id not in request.exclude_hosts]
    rooms = {h.host_id: h for h in present if not h.cordoned}
    cordoned = cordon_note(h.host_id for h in present if h.cordoned)
    if not rooms:
        raise FailedPrecondition(
            f"building {request.building or '(default)'} has no "
            f"{'placeable' if cordoned else 'alive'} host to place "
            f"{request.apartment}/{request.unit} on" + (f" ({cordoned})" if cordoned else ""),
            building=request.building,
            unit=request.unit,
        )
    key = (request.apartment, request.unit, request.slot)
    # Only the chosen host changes with each decision, and a host that cannot take one more
    # instance never can later in the same request; so every candidate sits once in a heap
    # by its rank, and the chosen one goes back with its new rank (O(log hosts) per
    # instance, the same choices as ranking every host every time).
    open_rooms = {h: _OpenRoom(room, port_range) for h, room in rooms.items()}
    heap = [(r.rank(key), h) for h, r in open_rooms.items() if r.takes(request.resources)]
    heapq.heapify(heap)
    decided: list[Placement] = []
    for index, instance_id in enumerate(request.instance_ids):
        if not heap:
            final = [r.room() for r in open_rooms.values()]
            raise _refusal(request, final, port_range, index, cordoned)
        _, host_id = heapq.heappop(heap)
        best = open_rooms[host_id]
        decided.append(Placement(instance_id, host_id, best.take(request.resources, key)))
        if best.takes(request.resources):
            heapq.heappush(heap, (best.rank(key), host_id))
    return decided


class _OpenRoom:
    """A host's room while one request is placed: what it has left, changed in place."""

    def __init__(self, room: HostRoom, port_range: tuple[int, int]) -> None:
        self.base = room
        self.allocated = room.allocated
        self.free = room.available
        self.ports = set(room.ports)
        self.slots = dict(room.slots)
        self.low, self.high = port_range
        self.port = self._next_port(self.low)

    def _next_port(self, start: int) -> int | None:
        for port in range(start, self.high + 1):
            if port not in self.ports:
                return port
        return None

    def takes(self, wanted: Resources) -> bool:
        return self.port is not None and not self.free.shortfalls(wanted)

    def rank(self, key: tuple[str, str, str]) -> tuple[int, float, str]:
        return _rank(self.base, self.free, key, self.slots)

    def take(self, wanted: Resources, key: tuple[str, str, str]) -> int:
        port = self.port
        assert port is not None
        self.ports.add(port)
        self.port = self._next_port(port + 1)
        self.allocated = self.allocated + wanted
        self.free = self.base.capacity.minus(self.allocated)
        self.slots[key] = self.slots.get(key, 0) + 1
        return port

    def room(self) -> HostRoom:
        return replace(self.base, allocated=self.allocated, ports=frozenset(self.ports),
                       slots=self.slots)


def _rank(room: HostRoom, free: Resources, key: tuple[str, str, str],
          slots: Mapping[tuple[str, str, str], int]) -> tuple[int, float, str]:
    capacity = room.capacity
    fractions = [
        free.cpu / capacity.cpu if capacity.cpu else 0.0,
        free.memory / capacity.memory if capacity.memory else 0.0,
    ]
    return slots.get(key, 0), -min(fractions), room.host_id


def _free_port(room: HostRoom, port_range: tuple[int, int]) -> int | None:
    low, high = port_range
    for port in range(low, high + 1):
        if port not in room.ports:
            return port
    return None


def _refusal(
    request: PlacementRequest,
    rooms: list[HostRoom],
    port_range: tuple[int, int],
    placed: int,
    cordoned: str = "",
) -> InsufficientResources:
    wanted = request.resources
    short_everywhere = []
    for name in RESOURCE_NAMES:
        most = max(getattr(room.available, name) for room in rooms)
        if getattr(wanted, name) > most + (1e-6 if name == "cpu" else 0):
            short_everywhere.append(
                f"{name} (each instance requests {format_amount(name, getattr(wanted, name))}, "
                f"the most free on one host is {format_amount(name, most)})"
            )
    if short_everywhere:
        what = "; ".join(short_everywhere)
        resource = short_everywhere[0].split(" ")[0]
    elif all(_free_port(room, port_range) is None for room in rooms):
        what, resource = f"ports (range {port_range[0]}-{port_range[1]} is full)", "ports"
    else:
        per_host = [
            f"{room.host_id}: " + ", ".join(s.resource for s in room.available.shortfalls(
                wanted)) for room in rooms if not room.fits(wanted)
        ]
        what = "no single host has all of it (" + "; ".join(per_host) + ")"
        resource = room_shortest(rooms, wanted)
    total = len(request.instance_ids)
    return InsufficientResources(
        f"insufficient {what}: cannot place {request.apartment}/{request.unit} "
        f"({placed} of {total} instance(s) fit in building {request.building or '(default)'}"
        + (f"; {cordoned}" if cordoned else "") + ")",
        resource=resource,
        unit=request.unit,
        building=request.building,
    )


def cordon_note(host_ids: Iterable[str]) -> str:
    """"host h1 is cordoned, host h2 is cordoned" for the cordoned hosts placement skipped
    (empty when none was)."""
    return ", ".join(f"host {h} is cordoned" for h in sorted(host_ids))


def room_shortest(rooms: list[HostRoom], wanted: Resources) -> str:
    """The resource most often short across ``rooms`` (names the refusal's resource)."""
    counts: dict[str, int] = {}
    for room in rooms:
        for shortfall in room.available.shortfalls(wanted):
            counts[shortfall.resource] = counts.get(shortfall.resource, 0) + 1
    return max(counts, key=lambda name: (counts[name], name)) if counts else "cpu"
