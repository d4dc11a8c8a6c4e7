"""Rebalancing a unit, decided: the even-spread plan, the rebalance record and its next step.

Placement's spread rule (coordinator/fleet/placement.py) puts each new instance of a unit
and slot on the host holding the fewest of them. Instances placed while a host was away
stay where they are when it returns (two on one host, none on the returned one), so a
rebalance moves them back, one at a time with the shared mover
(coordinator/fleet/instance_move.py: replacement healthy and routed before the old one
drains). ``plan_spread`` says which instances go where: among the placeable (alive,
uncordoned) hosts, repeatedly one instance from the host holding the most to the one
holding the fewest that has room for it, while the two differ by two or more. So the
plan never over-commits a host, ends with a max-min spread of at most one where room
allows, and moves no more instances than that needs. Instances on other hosts (cordoned,
lost) are left to drains and healing; paused instances stay where they are (a replacement
would run what an operator froze) and the others are evened out around them.

A rebalance's progress is a ``RebalanceRecord`` in etcd (``{p}/rebalances/{apartment}/
{unit}``), so a new leader carries on. ``plan_rebalance(record, view, now)`` is pure: the
caller observes, commits the record it returns, then acts (coordinator/fleet/rebalances.py).
A rebalance stops (``stopped``) when its unit gets an active rollout or a host drain
starts (``halt`` says why): the move under way is undone unless it is already stopping
its old instance. A move that fails (no room after all, the replacement not healthy) ends
the rebalance ``stopped`` with the reason; nothing is forced.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from common.errors import FailedPrecondition, InsufficientResources
from coordinator.fleet.instance_move import (
    MOVED_KEPT,
    NOTHING,
    MoveAction,
    MovePhase,
    MoveView,
    Moving,
    moving_from_dict,
    moving_to_dict,
    phase_text,
    step_move,
    undo_target,
)
from coordinator.fleet.placement import HostRoom, PlacementRequest, place
from coordinator.state.records import InstanceRecord

__all__ = ["MOVED_KEPT", "RebalanceRecord", "RebalanceState", "RebalanceView", "SpreadMove",
           "plan_rebalance", "plan_spread", "spread_even"]

@dataclass(frozen=True)
class SpreadMove:
    instance: InstanceRecord
    to_host: str

    @property
    def text(self) -> str:
        i = self.instance
        return f"{i.apartment}/{i.unit} {i.instance_id} {i.host_id} -> {self.to_host}"


def plan_spread(instances: Sequence[InstanceRecord], rooms: Sequence[HostRoom],
                port_range: tuple[int, int] = (20000, 29999)) -> tuple[SpreadMove, ...]:
    """The moves, in order, that even out each (unit, slot) of ``instances`` over the
    uncordoned ``rooms`` (see the module doc). Each move's room is taken on its target and
    freed on its source before the next is decided, as the moves run one after the other."""
    current = {r.host_id: r for r in rooms if not r.cordoned}
    groups: dict[tuple[str, str, str], list[InstanceRecord]] = {}
    for inst in sorted(instances, key=lambda i: i.instance_id):
        if inst.host_id in current and not inst.paused:
            groups.setdefault((inst.apartment, inst.unit, inst.slot), []).append(inst)
    on: dict[tuple[str, str, str], dict[str, list[InstanceRecord]]] = {}
    for key, members in sorted(groups.items()):
        on[key] = {h: [] for h in current}
        for inst in members:
            on[key][inst.host_id].append(inst)
    moves: list[SpreadMove] = []
    # one move at a time over every unit: a move of one unit may free room another needs
    while (found := _next_of_any(on, current, port_range)) is not None:
        key, inst, to_host, port = found
        on[key][inst.host_id].remove(inst)
        on[key][to_host].append(replace(inst, host_id=to_host, port=port))
        current[to_host] = _took(current[to_host], key, inst, port, +1)
        current[inst.host_id] = _took(current[inst.host_id], key, inst, inst.port, -1)
        moves.append(SpreadMove(inst, to_host))
    return tuple(moves)


def spread_even(instances: Sequence[InstanceRecord], hosts: Collection[str]) -> bool:
    """True when no (unit, slot) of ``instances`` differs by two or more between two of
    ``hosts`` (the uncordoned placeable ones): ``plan_spread`` then moves nothing, whatever
    the rooms, so a caller checking many units builds rooms only for the uneven ones."""
    counts: dict[tuple[str, str, str], dict[str, int]] = {}
    for inst in instances:
        if inst.host_id in hosts and not inst.paused:
            per_host = counts.setdefault((inst.apartment, inst.unit, inst.slot), {})
            per_host[inst.host_id] = per_host.get(inst.host_id, 0) + 1
    for per_host in counts.values():
        fewest = min(per_host.values()) if len(per_host) == len(hosts) else 0
        if max(per_host.values()) - fewest >= 2:
            return False
    return True


def _next_of_any(on: Mapping[tuple[str, str, str], Mapping[str, list[InstanceRecord]]],
                 rooms: Mapping[str, HostRoom], port_range: tuple[int, int]
                 ) -> tuple[tuple[str, str, str], InstanceRecord, str, int] | None:
    for key, per_host in on.items():
        found = _next_move(key, per_host, rooms, port_range)
        if found is not None:
            return key, *found
    return None


def _next_move(key: tuple[str, str, str], on: Mapping[str, list[InstanceRecord]],
               rooms: Mapping[str, HostRoom], port_range: tuple[int, int]
               ) -> tuple[InstanceRecord, str, int] | None:
    """The next move: from the fullest host to the emptiest one it fits on, while they
    differ by two or more (ties by host id)."""
    by_count = sorted(on, key=lambda h: (-len(on[h]), h))
    emptiest = sorted(on, key=lambda h: (len(on[h]), h))
    for src in by_count:
        # the fullest first: once one is within one of the emptiest, every later one is
        # (an evenly spread unit costs two sorts, not one per host: the leader checks every
        # running unit's spread every few seconds)
        if not on[src] or len(on[src]) - len(on[emptiest[0]]) < 2:
            break
        for dst in emptiest:
            if len(on[src]) - len(on[dst]) < 2:
                break
            for inst in reversed(on[src]):  # any of them (they may differ in size)
                port = _fits(key, inst, rooms[dst], port_range)
                if port is not None:
                    return inst, dst, port
    return None


def _fits(key: tuple[str, str, str], inst: InstanceRecord, room: HostRoom,
          port_range: tuple[int, int]) -> int | None:
    """The port ``inst`` would get on ``room`` by placement's own rules (None: no room)."""
    request = PlacementRequest(key[0], key[1], key[2], inst.resources,
                               (f"{inst.instance_id}-moved",))
    try:
        return place(request, [room], port_range)[0].port
    except (InsufficientResources, FailedPrecondition):
        return None


def _took(room: HostRoom, key: tuple[str, str, str], inst: InstanceRecord, port: int,
          sign: int) -> HostRoom:
    slots = dict(room.slots)
    slots[key] = slots.get(key, 0) + sign
    if sign > 0:
        return replace(room, allocated=room.allocated + inst.resources,
                       ports=room.ports | {port}, slots=slots)
    return replace(room, allocated=room.allocated.minus(inst.resources),
                   ports=room.ports - {port}, slots=slots)


class RebalanceState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    """The unit is spread evenly (as far as room allows)."""
    STOPPED = "stopped"
    """Halted (rollout, drain) or a move failed; the message says why."""

    @property
    def active(self) -> bool:
        return self is RebalanceState.RUNNING


@dataclass(frozen=True)
class RebalanceRecord:
    apartment: str
    unit: str
    state: RebalanceState
    started_at: float
    reason: str = ""
    """Who asked: an operator, or the automatic rebalance (and for how long it was uneven)."""
    finished_at: float = 0.0
    moving: Moving | None = None
    moved_count: int = 0
    moved: tuple[str, ...] = ()
    """The last MOVED_KEPT moves, ``old -> new on host``."""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "apartment": self.apartment, "unit": self.unit, "state": self.state.value,
            "started_at": self.started_at, "reason": self.reason,
            "finished_at": self.finished_at, "moved_count": self.moved_count,
            "moved": list(self.moved), "message": self.message}
        if self.moving is not None:
            raw["moving"] = moving_to_dict(self.moving)
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RebalanceRecord:
        return cls(
            apartment=str(raw["apartment"]), unit=str(raw["unit"]),
            state=RebalanceState(raw["state"]), started_at=float(raw.get("started_at", 0.0)),
            reason=str(raw.get("reason", "")), finished_at=float(raw.get("finished_at", 0.0)),
            moving=moving_from_dict(raw.get("moving")),
            moved_count=int(raw.get("moved_count", 0)),
            moved=tuple(str(x) for x in raw.get("moved", ())),
            message=str(raw.get("message", "")))


@dataclass(frozen=True)
class RebalanceView:
    """What the leader observes for one rebalance."""

    moves: Sequence[SpreadMove] = ()
    """``plan_spread`` of the unit now."""
    move: MoveView = field(default_factory=lambda: MoveView(None))
    """The move under way."""
    halt: str = ""
    """Why the rebalance must stop now (empty: it may go on)."""


def plan_rebalance(record: RebalanceRecord, view: RebalanceView, now: float, *,
                   settle: float = 2.0, start_timeout: float = 120.0
                   ) -> tuple[RebalanceRecord, MoveAction]:
    """The rebalance's next record and the one action to take after committing it."""
    if not record.state.active:
        return record, NOTHING
    moving = record.moving
    if moving is not None:
        step = step_move(moving, view.move, now, settle=settle, start_timeout=start_timeout,
                         halt=bool(view.halt))
        if step.interrupted:
            undo = undo_target(moving, view.move)
            return (_ended(record, RebalanceState.STOPPED, now, view.halt),
                    MoveAction("stop_new", instance_id=undo) if undo else NOTHING)
        if step.skipped:
            return (_ended(record, RebalanceState.STOPPED, now,
                           f"{moving.old_id} not moved: {step.skipped}"), step.action)
        if not step.moved:
            if step.moving is not None and step.moving != moving:
                record = replace(record, moving=step.moving, message=phase_text(step.moving))
            return record, step.action
        record = replace(record, moving=None, moved_count=record.moved_count + 1,
                         moved=(*record.moved, step.moved)[-MOVED_KEPT:],
                         message=f"moved {step.moved}")
    if view.halt:
        return _ended(record, RebalanceState.STOPPED, now, view.halt), NOTHING
    if not view.moves:
        return _ended(record, RebalanceState.DONE, now,
                      f"evenly spread: {record.moved_count} instance(s) moved"), NOTHING
    nxt = view.moves[0]
    moving = Moving(nxt.instance.instance_id, f"{record.apartment}/{record.unit}",
                    MovePhase.PLACING, now, new_host=nxt.to_host)
    return (replace(record, moving=moving, message=f"placing a replacement for {nxt.text}"),
            MoveAction("place", instance=nxt.instance, onto=nxt.to_host))


def _ended(record: RebalanceRecord, state: RebalanceState, now: float, why: str
           ) -> RebalanceRecord:
    return replace(record, state=state, finished_at=now, moving=None, message=why)
