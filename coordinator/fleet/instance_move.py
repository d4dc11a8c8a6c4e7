"""Moving one instance to another host without a failed request, decided (pure).

A host drain (coordinator/fleet/drain_plan.py) and a unit rebalance
(coordinator/fleet/rebalance_plan.py) both move instances one at a time with the same steps.
The move under way is a ``Moving`` kept in the caller's record in etcd, so a new leader
carries on; each phase is committed before it is acted on (write intent first):

``placing``   a replacement is being recorded on another host (``onto`` when the caller
              chose the host); it carries ``replaces`` = the old instance, so a new leader
              finds it if the record never learned its id
``starting``  the replacement was placed and started; waiting for it to be healthy
``routed``    healthy and sent in the unit's route to every host; waiting ``settle`` seconds
              for the hosts to apply it
``stopping``  the old instance is taken out of every route, then drained and stopped

``step_move`` returns the next ``Moving`` and the one action to take after committing it;
the I/O is coordinator/fleet/instance_mover.py.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from coordinator.state.records import InstanceRecord

__all__ = ["MOVED_KEPT", "NOTHING", "MoveAction", "MovePhase", "MoveStep", "MoveView", "Moving",
           "moving_from_dict", "moving_text", "moving_to_dict", "phase_text", "replacement_of",
           "step_move", "undo_target"]


class MovePhase(StrEnum):
    PLACING = "placing"
    STARTING = "starting"
    ROUTED = "routed"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Moving:
    """The one move under way."""

    old_id: str
    unit: str
    """``apartment/unit``."""
    phase: MovePhase
    since: float
    """Epoch seconds the phase began."""
    new_id: str = ""
    new_host: str = ""
    """Where the replacement is (or, while placing, the host chosen for it; empty: any)."""


def moving_to_dict(m: Moving) -> dict[str, Any]:
    return {"old_id": m.old_id, "unit": m.unit, "phase": m.phase.value, "since": m.since,
            "new_id": m.new_id, "new_host": m.new_host}


def moving_from_dict(m: Mapping[str, Any] | None) -> Moving | None:
    if not m:
        return None
    return Moving(str(m["old_id"]), str(m.get("unit", "")), MovePhase(m["phase"]),
                  float(m.get("since", 0.0)), str(m.get("new_id", "")),
                  str(m.get("new_host", "")))


def moving_text(moving: Moving | None) -> str:
    """One line for the move under way (empty when none)."""
    if moving is None:
        return ""
    target = f" -> {moving.new_id} on {moving.new_host}" if moving.new_id else ""
    return f"{moving.unit} {moving.old_id}{target} ({moving.phase.value})"


def phase_text(moving: Moving) -> str:
    """What the move is doing, for the caller's record message."""
    if moving.phase is MovePhase.ROUTED:
        return f"{moving.new_id} on {moving.new_host} is healthy; routing it"
    if moving.phase is MovePhase.STOPPING:
        return f"draining and stopping {moving.old_id}"
    return f"starting {moving.new_id} on {moving.new_host} to replace {moving.old_id}"


@dataclass(frozen=True)
class MoveView:
    """What the leader observes of the move under way."""

    old: InstanceRecord | None
    """The old instance as recorded (None: gone)."""
    existing: Collection[str] = ()
    """Ids of every instance that exists (to see whether the replacement still does)."""
    replacement: Mapping[str, InstanceRecord] = field(default_factory=dict)
    """Old instance id -> the instance recorded as replacing it."""
    healthy: Collection[str] = ()
    """Instance ids that are running and healthy (routable)."""
    start_errors: Mapping[str, str] = field(default_factory=dict)
    """Instance id -> why it could not be started."""


@dataclass(frozen=True)
class MoveAction:
    """What to do after the record is committed (at most one thing)."""

    kind: str
    """``place`` (old), ``route`` (unit of the move), ``stop_old``, ``stop_new``, ``none``."""
    instance: InstanceRecord | None = None
    instance_id: str = ""
    unit: str = ""
    onto: str = ""
    """``place``: the host the replacement must go to (empty: where placement decides)."""


NOTHING = MoveAction("none")

MOVED_KEPT = 50
"""Moves a drain or rebalance record lists (its count goes on)."""


@dataclass(frozen=True)
class MoveStep:
    moving: Moving | None
    """The move as it goes on (None once it is done or given up)."""
    action: MoveAction = NOTHING
    moved: str = ""
    """When the move is done: ``old -> new on host``."""
    skipped: str = ""
    """When the move was given up: why."""
    interrupted: bool = False
    """``halt`` was asked and the move may be undone (the caller stops it)."""


def replacement_of(moving: Moving, view: MoveView) -> str:
    """The replacement's id: recorded, or found by its ``replaces`` marker."""
    if moving.new_id:
        return moving.new_id
    found = view.replacement.get(moving.old_id)
    return found.instance_id if found is not None else ""


def step_move(moving: Moving, view: MoveView, now: float, *, settle: float,
              start_timeout: float, halt: bool = False) -> MoveStep:
    """The move's next state and action. ``halt``: the caller is ending (deadline, host
    uncordoned, rollout started); a move already stopping its old instance finishes, any
    other is reported ``interrupted`` for the caller to undo."""
    new_id = replacement_of(moving, view)
    if moving.phase is MovePhase.STOPPING or view.old is None:
        if view.old is not None:
            return MoveStep(moving, MoveAction("stop_old", instance_id=moving.old_id))
        return MoveStep(None, moved=f"{moving.old_id} -> {new_id or '(gone)'} on "
                                    f"{moving.new_host or '-'}")
    if halt:
        return MoveStep(moving, interrupted=True)
    if not new_id:
        if moving.phase is MovePhase.PLACING:
            return MoveStep(moving, MoveAction("place", instance=view.old, onto=moving.new_host))
        return MoveStep(None, skipped="its replacement is gone")
    if moving.new_id != new_id:  # a new leader found the replacement by its marker
        moving = replace(moving, new_id=new_id, new_host=view.replacement[moving.old_id].host_id,
                         phase=MovePhase.STARTING, since=now)
    if new_id not in view.existing:
        return MoveStep(None, skipped=f"its replacement {new_id} is gone")
    if moving.phase in (MovePhase.PLACING, MovePhase.STARTING):
        if new_id in view.healthy:
            return MoveStep(replace(moving, phase=MovePhase.ROUTED, since=now),
                            MoveAction("route", unit=moving.unit))
        error = view.start_errors.get(new_id, "")
        if error or now - moving.since >= start_timeout:
            why = error or f"not healthy within {start_timeout:.0f}s"
            return MoveStep(None, MoveAction("stop_new", instance_id=new_id),
                            skipped=f"its replacement {new_id} on {moving.new_host} failed: {why}")
        return MoveStep(moving)
    if moving.phase is MovePhase.ROUTED and now - moving.since >= settle:
        return MoveStep(replace(moving, phase=MovePhase.STOPPING, since=now),
                        MoveAction("stop_old", instance_id=moving.old_id))
    return MoveStep(moving)


def undo_target(moving: Moving | None, view: MoveView) -> str:
    """The replacement to stop when a move is given up before its old instance stops
    (empty: nothing to undo)."""
    if moving is None or moving.phase is MovePhase.STOPPING:
        return ""
    new_id = replacement_of(moving, view)
    return new_id if new_id and new_id in view.existing else ""
