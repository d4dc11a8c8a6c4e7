"""Moves shared by the engine, its step machine and its controls (pure)."""

from __future__ import annotations

from dataclasses import replace

from coordinator.rollouts.actions import EmitEvent
from coordinator.rollouts.record import Phase, RolloutRecord, StepRecord

__all__ = ["enter_completing", "enter_switching", "event", "start_rollback", "stop_failed"]


def event(kind: str, record: RolloutRecord, message: str, **details: str) -> EmitEvent:
    """An event about ``record`` with its id, versions and phase in the details."""
    base = {"rollout_id": record.rollout_id, "from_version": record.from_version,
            "to_version": record.to_version, "phase": record.public_phase(),
            "percent": f"{record.new_percent:g}"}
    return EmitEvent(kind, message, {**base, **details})


def start_rollback(
    record: RolloutRecord, now: float, end: Phase, reasons: tuple[str, ...]
) -> RolloutRecord:
    """Into ``rolling_back``: traffic back to stable (if it moved), new instances removed,
    then ``end`` (rolled_back, failed or aborted) with ``reasons`` kept as the failure."""
    step = record.current_step()
    if record.phase is Phase.SWITCHING and step is not None and step.ended_at is None:
        record = record.with_step(replace(step, outcome="failed", ended_at=now,
                                          reasons=step.reasons or reasons))
    return replace(
        record,
        phase=Phase.ROLLING_BACK,
        phase_started_at=now,
        end_phase=end,
        new_percent=0.0,
        paused=False,
        reason="; ".join(reasons),
        failure=reasons,
    )


def enter_switching(record: RolloutRecord, now: float) -> tuple[RolloutRecord, list[EmitEvent]]:
    """Step 0 of the switch: its share goes to the new version on every host."""
    percent = record.settings.step_plan().steps[0]
    moved = replace(
        record,
        phase=Phase.SWITCHING,
        phase_started_at=now,
        step_index=0,
        step_phase="monitoring",
        step_phase_started_at=now,
        step_extensions=0,
        window_start=now,
        new_percent=float(percent),
        traffic_moved=True,
    )
    moved = moved.with_step(StepRecord(0, percent, now))
    return moved, [event("rollout.step", moved,
                         f"step 1: {percent}% of traffic to {record.to_version}", step="0")]


def enter_completing(
    record: RolloutRecord, now: float, why: str
) -> tuple[RolloutRecord, list[EmitEvent]]:
    """All traffic on the new version; the old one goes after the cleanup delay."""
    moved = replace(
        record,
        phase=Phase.COMPLETING,
        phase_started_at=now,
        new_percent=100.0,
        traffic_moved=True,
        cleanup_at=now + record.settings.effective_cleanup_delay_s,
    )
    return moved, [event("rollout.promoted", moved,
                         f"{record.to_version} promoted ({why}); "
                         f"{record.from_version or 'nothing'} removed after "
                         f"{record.settings.effective_cleanup_delay_s:g} s")]


def stop_failed(record: RolloutRecord, reason: str, now: float) -> RolloutRecord:
    """``record`` stopped for ``reason`` with none of its actions carried out: failed (a
    record that had already ended keeps its phase), the reason kept as a failure."""
    return replace(
        record,
        phase=record.phase if record.terminal else Phase.FAILED,
        seq=record.seq + 1,
        updated_at=now,
        phase_started_at=record.phase_started_at if record.terminal else now,
        ended_at=record.ended_at or now,
        paused=False,
        pending_controls=(),
        reason=reason,
        failure=(*record.failure, reason),
    )
