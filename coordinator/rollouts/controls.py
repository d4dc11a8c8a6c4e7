"""Operator controls (promote, abort, pause, resume, retry) and new rollout records, pure.

A control is accepted by ``request_control`` (which refuses what the rollout's phase does
not allow, with a clear message) and written into the record's ``pending_controls`` by a
compare-and-swap, so any coordinator can accept it and the leader's runner, which loses
its own next write to that change, re-reads the record and carries it out through
``apply_controls`` on its next plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from common.errors import FailedPrecondition
from coordinator.rollouts.actions import EmitEvent
from coordinator.rollouts.record import Control, Phase, RolloutRecord
from coordinator.rollouts.settings import RolloutSettings
from coordinator.rollouts.transitions import (
    enter_completing,
    enter_switching,
    event,
    start_rollback,
)

__all__ = ["apply_controls", "new_rollout", "request_control", "retry_rollout"]

_PROMOTABLE = frozenset({Phase.AWAITING_PROMOTION, Phase.SWITCHING, Phase.COMPLETING})


def new_rollout(
    rollout_id: str,
    apartment: str,
    unit: str,
    building: str,
    from_version: str,
    to_version: str,
    settings: RolloutSettings,
    now: float,
    *,
    new_slot: str = "green",
    old_instances: Sequence[str] = (),
    attempt: int = 1,
    retry_of: str = "",
) -> RolloutRecord:
    """A pending rollout; its first plan starts it."""
    return RolloutRecord(
        rollout_id=rollout_id,
        apartment=apartment,
        unit=unit,
        building=building,
        from_version=from_version,
        to_version=to_version,
        settings=settings,
        created_at=now,
        new_slot=new_slot,
        old_instances=tuple(old_instances),
        updated_at=now,
        phase_started_at=now,
        attempt=attempt,
        retry_of=retry_of,
    )


def request_control(record: RolloutRecord, control: Control, now: float) -> RolloutRecord:
    """``record`` with ``control`` queued, or FailedPrecondition saying why it cannot be."""
    name = f"rollout {record.rollout_id} of {record.apartment}/{record.unit}"
    if record.terminal:
        hint = "; use retry" if record.phase is not Phase.PROMOTED else ""
        raise FailedPrecondition(f"{name} has already ended ({record.phase.value}){hint}",
                                 rollout=record.rollout_id, phase=record.phase.value)
    if record.phase is Phase.ROLLING_BACK:
        raise FailedPrecondition(f"{name} is already rolling back",
                                 rollout=record.rollout_id, phase=record.phase.value)
    pending = record.pending_controls
    if control is Control.PROMOTE and record.phase not in _PROMOTABLE:
        raise FailedPrecondition(
            f"{name} cannot be promoted while {record.phase.value}: the new instances must "
            "be healthy (and validated) first", rollout=record.rollout_id,
            phase=record.phase.value)
    if control is Control.RESUME and not record.paused and Control.PAUSE not in pending:
        raise FailedPrecondition(f"{name} is not paused", rollout=record.rollout_id)
    if control is Control.PAUSE and (record.paused or Control.PAUSE in pending):
        return record
    return replace(record, pending_controls=(*pending, control), updated_at=now)


def retry_rollout(
    failed: RolloutRecord, rollout_id: str, now: float, stable_version: str,
    old_instances: Sequence[str] = (), new_slot: str = "",
) -> RolloutRecord:
    """A fresh attempt of a rollout that rolled back, failed or was aborted."""
    if failed.active:
        raise FailedPrecondition(
            f"rollout {failed.rollout_id} is still {failed.public_phase()}; only an ended "
            "rollout can be retried", rollout=failed.rollout_id)
    if failed.phase is Phase.PROMOTED:
        raise FailedPrecondition(
            f"rollout {failed.rollout_id} succeeded; there is nothing to retry",
            rollout=failed.rollout_id)
    if stable_version == failed.to_version:
        raise FailedPrecondition(f"{failed.to_version} is already the stable version")
    return new_rollout(
        rollout_id, failed.apartment, failed.unit, failed.building, stable_version,
        failed.to_version, failed.settings, now, new_slot=new_slot or failed.new_slot,
        old_instances=old_instances, attempt=failed.attempt + 1,
        retry_of=failed.rollout_id,
    )


def apply_controls(
    record: RolloutRecord, now: float, new_healthy: bool = True
) -> tuple[RolloutRecord, list[EmitEvent]]:
    """Carry out the queued controls in order (abort wins over everything after it).

    A promote waits in the queue while a new instance is unhealthy: it would move traffic
    to a version that cannot take it.
    """
    if not record.pending_controls:
        return record, []
    moved = replace(record, pending_controls=())
    events: list[EmitEvent] = []
    kept: list[Control] = []
    for control in record.pending_controls:
        if moved.phase is Phase.ROLLING_BACK or moved.terminal:
            break
        if control is Control.PROMOTE and not new_healthy and (
            moved.phase in (Phase.AWAITING_PROMOTION, Phase.SWITCHING)
        ):
            kept.append(control)
            continue
        moved, more = _apply(moved, control, now)
        events += more
    if kept and moved.active and moved.phase is not Phase.ROLLING_BACK:
        moved = replace(moved, pending_controls=tuple(kept))
    if moved == record:
        return record, []
    return moved, events


def _apply(
    record: RolloutRecord, control: Control, now: float
) -> tuple[RolloutRecord, list[EmitEvent]]:
    if control is Control.ABORT:
        if record.phase is Phase.PENDING:  # nothing was done yet: nothing to undo
            moved = replace(record, phase=Phase.ABORTED, phase_started_at=now, ended_at=now,
                            reason="aborted by request", failure=("aborted by request",))
            return moved, [event("rollout.rolled_back", moved, "aborted before it started",
                                 control="abort", outcome=Phase.ABORTED.value)]
        moved = start_rollback(record, now, Phase.ABORTED, ("aborted by request",))
        return moved, [event("rollout.step", moved, "abort requested; rolling back",
                             control="abort")]
    if control is Control.PAUSE:
        if record.paused:
            return record, []
        moved = replace(record, paused=True)
        return moved, [event("rollout.step", moved, "paused", control="pause")]
    if control is Control.RESUME:
        if not record.paused:
            return record, []
        moved = replace(record, paused=False)
        if moved.phase is Phase.SWITCHING:
            # the step is watched afresh: what happened while paused was not a decision
            moved = replace(moved, step_phase_started_at=now, window_start=now)
        return moved, [event("rollout.step", moved, "resumed", control="resume")]
    return _promote(record, now)


def _promote(record: RolloutRecord, now: float) -> tuple[RolloutRecord, list[EmitEvent]]:
    unpaused = replace(record, paused=False)
    if record.phase is Phase.AWAITING_PROMOTION:
        moved, events = enter_switching(unpaused, now)
        return moved, [event("rollout.step", moved, "promote requested", control="promote"),
                       *events]
    if record.phase is Phase.SWITCHING:
        step = record.current_step()
        skipped = unpaused
        if step is not None and step.ended_at is None:
            skipped = unpaused.with_step(replace(step, outcome="skipped", ended_at=now,
                                                 reasons=("promoted by request",)))
        return enter_completing(skipped, now, "promoted by request")
    if record.phase is Phase.COMPLETING:
        moved = replace(unpaused, cleanup_at=now)
        return moved, [event("rollout.step", moved, "promote requested: cleaning up now",
                             control="promote")]
    return record, []  # the phase moved on since the control was accepted
