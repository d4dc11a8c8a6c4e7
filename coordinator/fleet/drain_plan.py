"""Draining a host, decided: the drain record, the next step of a drain, and the move plan.

A drain (``landlord hosts drain HOST``) moves every instance off a cordoned host one at a
time. Its progress is a ``DrainRecord`` in etcd (``{p}/drains/{host_id}``), so a new leader
carries on where the last one stopped. One move is the shared mover's
(coordinator/fleet/instance_move.py: placing, starting, routed, stopping, each committed
before it is acted on).

Instances of a unit in an active rollout are not moved while it runs (the rollout owns its
instances); the drain moves the others first and waits. An instance that cannot be placed
(no room, no eligible host) is skipped with the reason; when only such instances are left
the drain ends ``blocked``, naming each. A paused instance is not moved either (a
replacement would run where the operator froze it): resume or stop it. At the deadline
(or when the host is uncordoned) a drain stops (``stopped``): the move under way is undone,
its replacement stopped, and the old instance keeps serving; nothing is forced.

``plan_drain(record, view, now)`` is pure: the caller observes, commits the record it
returns, then carries out its action (coordinator/fleet/drains.py).
``plan_moves`` previews where each instance would go (pure, over placement's rooms).
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

__all__ = ["MOVED_KEPT", "DrainAction", "DrainRecord", "DrainState", "DrainView", "Move",
           "MovePlan", "left_on_host", "left_text", "plan_drain", "plan_moves", "skip_move",
           "stop_drain"]

class DrainState(StrEnum):
    DRAINING = "draining"
    DRAINED = "drained"
    """Nothing is placed on the host any more: it may be decommissioned."""
    STOPPED = "stopped"
    """The deadline passed first; what is left is named."""
    BLOCKED = "blocked"
    """Only instances that cannot be placed elsewhere are left (each with its reason)."""

    @property
    def active(self) -> bool:
        return self is DrainState.DRAINING


@dataclass(frozen=True)
class DrainRecord:
    host_id: str
    state: DrainState
    started_at: float
    deadline_at: float = 0.0
    """Epoch seconds after which the drain stops (0: none)."""
    finished_at: float = 0.0
    moving: Moving | None = None
    moved_count: int = 0
    moved: tuple[str, ...] = ()
    """The last MOVED_KEPT moves, ``old -> new on host``."""
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Instance id -> why it was not moved (cannot be placed; its replacement failed)."""
    message: str = ""
    """What the drain is doing or why it ended."""

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "host_id": self.host_id, "state": self.state.value, "started_at": self.started_at,
            "deadline_at": self.deadline_at, "finished_at": self.finished_at,
            "moved_count": self.moved_count, "moved": list(self.moved),
            "skipped": dict(self.skipped), "message": self.message,
        }
        if self.moving is not None:
            raw["moving"] = moving_to_dict(self.moving)
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DrainRecord:
        moving = moving_from_dict(raw.get("moving"))
        return cls(
            host_id=str(raw["host_id"]), state=DrainState(raw["state"]),
            started_at=float(raw.get("started_at", 0.0)),
            deadline_at=float(raw.get("deadline_at", 0.0)),
            finished_at=float(raw.get("finished_at", 0.0)), moving=moving,
            moved_count=int(raw.get("moved_count", 0)),
            moved=tuple(str(x) for x in raw.get("moved", ())),
            skipped={str(k): str(v) for k, v in dict(raw.get("skipped", {})).items()},
            message=str(raw.get("message", "")),
        )


@dataclass(frozen=True)
class DrainView:
    """What the leader observes for one drain."""

    instances: Sequence[InstanceRecord]
    """The instances still placed on the draining host."""
    in_rollout: Collection[tuple[str, str]] = ()
    """Units with an active rollout."""
    existing: Collection[str] = ()
    """Ids of every instance that exists (to see whether the move's two still do)."""
    replacement: Mapping[str, InstanceRecord] = field(default_factory=dict)
    """Old instance id -> the instance recorded as replacing it."""
    healthy: Collection[str] = ()
    """Instance ids that are running and healthy (routable)."""
    start_errors: Mapping[str, str] = field(default_factory=dict)
    """Instance id -> why it could not be started."""


DrainAction = MoveAction
"""A drain acts with the shared mover's actions."""



def _unit(inst: InstanceRecord) -> str:
    return f"{inst.apartment}/{inst.unit}"


def plan_drain(record: DrainRecord, view: DrainView, now: float, *, settle: float = 2.0,
               start_timeout: float = 120.0) -> tuple[DrainRecord, DrainAction]:
    """The drain's next record and the one action to take after committing it."""
    if not record.state.active:
        return record, NOTHING
    on_host = {i.instance_id: i for i in view.instances}
    deadline = record.deadline_at > 0 and now >= record.deadline_at
    moving = record.moving
    if moving is not None:
        step = step_move(moving, _move_view(view, moving, on_host), now, settle=settle,
                         start_timeout=start_timeout, halt=deadline)
        if step.interrupted:
            return stop_drain(record, view, now)
        if step.moved:
            record = replace(record, moving=None, moved_count=record.moved_count + 1,
                             moved=(*record.moved, step.moved)[-MOVED_KEPT:],
                             message=f"moved {moving.unit} {step.moved}")
            return plan_drain(record, view, now, settle=settle, start_timeout=start_timeout)
        if step.skipped:
            return skip_move(record, moving.old_id, step.skipped), step.action
        if step.moving is not None and step.moving != moving:
            record = replace(record, moving=step.moving,
                             message=f"{step.moving.unit}: {phase_text(step.moving)}")
        return record, step.action
    if not on_host:
        return replace(record, state=DrainState.DRAINED, finished_at=now, message=(
            f"{record.host_id} drained: {record.moved_count} instance(s) moved; "
            "nothing is placed on it")), NOTHING
    if deadline:
        return stop_drain(record, view, now)
    waiting = sorted({_unit(i) for i in view.instances
                      if (i.apartment, i.unit) in view.in_rollout})
    candidates = [i for i in sorted(view.instances, key=lambda i: i.instance_id)
                  if i.instance_id not in record.skipped and not i.paused
                  and (i.apartment, i.unit) not in view.in_rollout]
    if candidates:
        nxt = candidates[0]
        moving = Moving(nxt.instance_id, _unit(nxt), MovePhase.PLACING, now)
        return (replace(record, moving=moving,
                        message=f"{_unit(nxt)}: placing a replacement for {nxt.instance_id}"),
                DrainAction("place", instance=nxt))
    if waiting:
        message = f"waiting for the active rollout of {', '.join(waiting)} to end"
        return (record if record.message == message else replace(record, message=message)), \
            NOTHING
    return replace(record, state=DrainState.BLOCKED, finished_at=now,
                   message="cannot move what is left: " + left_text(record, view)), NOTHING


def skip_move(record: DrainRecord, old_id: str, why: str) -> DrainRecord:
    """The move of ``old_id`` given up (``why``): the drain goes on with the others."""
    skipped = dict(record.skipped)
    skipped[old_id] = why
    return replace(record, moving=None, skipped=skipped, message=f"{old_id} not moved: {why}")


def stop_drain(record: DrainRecord, view: DrainView, now: float,
               why: str = "deadline reached") -> tuple[DrainRecord, DrainAction]:
    """End the drain (``stopped``) without forcing anything: the move under way is undone
    (its replacement, if placed, is taken out of the routes and stopped) and the old
    instance keeps serving; a move already stopping its old instance is let finish."""
    undo = ""
    if record.moving is not None:
        on_host = {i.instance_id: i for i in view.instances}
        undo = undo_target(record.moving, _move_view(view, record.moving, on_host))
    stopped = replace(record, state=DrainState.STOPPED, finished_at=now, moving=None,
                      message=f"{why}; left on the host: " + left_text(record, view))
    if undo:
        return stopped, DrainAction("stop_new", instance_id=undo)
    return stopped, NOTHING


def left_on_host(record: DrainRecord, view: DrainView) -> list[tuple[InstanceRecord, str]]:
    """The instances still on the host, each with why it is there (empty: not moved yet)."""
    left = []
    for inst in sorted(view.instances, key=lambda i: i.instance_id):
        why = record.skipped.get(inst.instance_id, "")
        if not why and (inst.apartment, inst.unit) in view.in_rollout:
            why = "waiting: its unit has an active rollout"
        if not why and inst.paused:
            why = "paused: resume it, or stop its unit, to move it"
        left.append((inst, why))
    return left


def left_text(record: DrainRecord, view: DrainView) -> str:
    """``a/web w-1 (why); ...`` for the instances still on the host."""
    return "; ".join(f"{_unit(inst)} {inst.instance_id}" + (f" ({why})" if why else "")
                     for inst, why in left_on_host(record, view)) or "nothing"


def _move_view(view: DrainView, moving: Moving, on_host: Mapping[str, InstanceRecord]
               ) -> MoveView:
    return MoveView(on_host.get(moving.old_id), view.existing, view.replacement, view.healthy,
                    view.start_errors)


# -- the move plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    instance_id: str
    unit: str
    to_host: str = ""
    """Empty when it cannot be placed (``why`` says why)."""
    why: str = ""


@dataclass(frozen=True)
class MovePlan:
    moves: tuple[Move, ...]

    @property
    def unplaceable(self) -> tuple[Move, ...]:
        return tuple(m for m in self.moves if not m.to_host)


def plan_moves(host_id: str, instances: Sequence[InstanceRecord], rooms: Sequence[HostRoom],
               building: Mapping[tuple[str, str], str], lost: Collection[str] = (),
               port_range: tuple[int, int] = (20000, 29999)) -> MovePlan:
    """Where each instance of ``host_id`` would go, moved one after the other as the drain
    does (each replacement takes its room before the next is placed; the old instances
    keep theirs on the drained host, which takes none). Placement's rules decide, spread
    included; an instance that fits nowhere gets the refusal's reason."""
    current = {r.host_id: r for r in rooms}
    moves = []
    for inst in sorted(instances, key=lambda i: i.instance_id):
        request = PlacementRequest(inst.apartment, inst.unit, inst.slot, inst.resources,
                                   (f"{inst.instance_id}-moved",),
                                   building.get((inst.apartment, inst.unit), ""),
                                   frozenset(lost) | {host_id})
        try:
            decided = place(request, list(current.values()), port_range)[0]
        except (InsufficientResources, FailedPrecondition) as exc:
            moves.append(Move(inst.instance_id, _unit(inst), "", str(exc)))
            continue
        room = current[decided.host_id]
        slots = dict(room.slots)
        key = (inst.apartment, inst.unit, inst.slot)
        slots[key] = slots.get(key, 0) + 1
        current[decided.host_id] = replace(room, allocated=room.allocated + inst.resources,
                                           ports=room.ports | {decided.port}, slots=slots)
        moves.append(Move(inst.instance_id, _unit(inst), decided.host_id))
    return MovePlan(tuple(moves))
