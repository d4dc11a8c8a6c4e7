"""The rollout engine: ``plan(record, observations, now) -> (new_record, actions)``, no I/O.

Each call makes at most one move. The runner commits ``new_record`` (compare-and-swap)
before it carries out ``actions``; those are ``actions_for(new_record)`` (idempotent, a pure
function of the committed record, so a new leader simply runs them again) plus the events
of the move. When nothing moves, the only action is a ``Wait`` hint.

Phases (record.Phase) and what their actions do:

==================  ===========================================================  ===========
phase               actions_for (idempotent)                                     unit state
==================  ===========================================================  ===========
pending             -                                                            -
deploying           start ``replicas`` new instances                             deploying
validating          integration checks + performance burst (blue-green)          deploying
awaiting_promotion  -                                                            deploying
switching           set the step's split on every host (sticky if asked)         rolling_out
completing          keep 100 % on the new version until the cleanup delay ends   rolling_out
cleaning            drain and stop the old version                               rolling_out
rolling_back        split back to stable (if traffic moved), stop new instances  rolling_back
promoted            unit running on the new version                              running
rolled_back/failed  unit running on the stable version (idle without one)        running
/aborted
==================  ===========================================================  ===========
"""

from __future__ import annotations

from dataclasses import replace

from common.bluegreen import judge_green
from common.lifecycle import DeployState
from common.rollout_policy import Outcome
from coordinator.rollouts.actions import (
    Action,
    EmitEvent,
    Observations,
    RunChecks,
    SetSplit,
    SetUnitState,
    StartInstances,
    StopInstances,
    Wait,
)
from coordinator.rollouts.controls import apply_controls
from coordinator.rollouts.record import Phase, RolloutRecord
from coordinator.rollouts.settings import StateMode, Strategy
from coordinator.rollouts.switching import next_wake_switching, switch_step
from coordinator.rollouts.transitions import enter_switching, start_rollback
from coordinator.rollouts.transitions import event as _event

__all__ = ["MAX_ACTION_FAILURES", "MAX_UNDO_FAILURES", "actions_for", "plan", "unit_state_for"]

MAX_ACTION_FAILURES = 3
"""Actions of a forward phase that failed this many times in a row fail the rollout."""
MAX_UNDO_FAILURES = 10
"""Rolling back that failed this many times in a row leaves the unit failed."""
IDLE_POLL_S = 5.0


def plan(
    record: RolloutRecord, obs: Observations, now: float
) -> tuple[RolloutRecord, list[Action]]:
    """The next record and what to do; ``record`` itself when nothing moves."""
    if record.terminal:
        return record, []
    healthy = sum(1 for i in obs.of_version(record.to_version) if i.healthy)
    moved, events = apply_controls(record, now, healthy >= record.settings.replicas)
    if moved == record:
        moved, events = _check_failures(record, obs, now)
    if moved == record:
        moved, events = _advance(record, obs, now)
    if moved == record:
        return record, [Wait(next_wake(record, now))]
    moved = replace(moved, seq=record.seq + 1, updated_at=now)
    actions: list[Action] = list(events)
    todo = actions_for(moved)
    if todo != actions_for(record) or obs.applied_seq < record.seq:
        actions.extend(todo)
    return moved, actions


def unit_state_for(record: RolloutRecord) -> DeployState:
    """The unit's deploy state while ``record`` is in its phase."""
    phase = record.phase
    if phase in (Phase.PENDING, Phase.DEPLOYING, Phase.VALIDATING, Phase.AWAITING_PROMOTION):
        return DeployState.DEPLOYING
    if phase in (Phase.SWITCHING, Phase.COMPLETING, Phase.CLEANING):
        if record.settings.strategy is Strategy.ROLLBACK:
            return DeployState.ROLLING_BACK
        return DeployState.ROLLING_OUT
    if phase is Phase.ROLLING_BACK:
        return DeployState.ROLLING_BACK
    if record.undo_failed:
        return DeployState.FAILED
    if phase is Phase.PROMOTED or record.has_stable:
        return DeployState.RUNNING
    return DeployState.IDLE


def actions_for(record: RolloutRecord) -> list[Action]:
    """The idempotent actions that realise ``record``'s phase (see the module table)."""
    phase, settings = record.phase, record.settings
    state = unit_state_for(record).value
    if phase is Phase.PENDING:
        return []
    if phase is Phase.DEPLOYING:
        state_from = record.old_instances if settings.state_mode is StateMode.SNAPSHOT else ()
        return [
            SetUnitState(state),
            StartInstances(record.to_version, record.new_slot, settings.replicas, state_from),
        ]
    if phase is Phase.VALIDATING:
        return [RunChecks(record.to_version, settings.checks, settings.performance_requests,
                          settings.max_latency_p95_ms is not None)]
    if phase is Phase.AWAITING_PROMOTION:
        return []
    if phase in (Phase.SWITCHING, Phase.COMPLETING):
        # sticky through the steps (with two versions to stick to); promotion (completing)
        # moves every client
        sticky = settings.sticky and phase is Phase.SWITCHING and record.has_stable
        return [SetSplit(record.split(), sticky), SetUnitState(state)]
    if phase is Phase.CLEANING:
        return [StopInstances(record.from_version)] if record.has_stable else []
    if phase is Phase.ROLLING_BACK:
        # traffic first, on every host at once; the slower cleanup after it
        back: list[Action] = []
        if record.traffic_moved and record.has_stable:
            back.append(SetSplit(record.split(0)))
        back += [SetUnitState(state), StopInstances(record.to_version)]
        return back
    if phase is Phase.PROMOTED:
        return [SetUnitState(state, stable_version=record.to_version)]
    return [SetUnitState(state, stable_version=record.from_version if record.has_stable else "")]


def next_wake(record: RolloutRecord, now: float) -> float:
    """When something may move without a new observation (a hint; observations also wake).
    A moment already past means the engine waits on an observation: poll."""
    idle = now + IDLE_POLL_S
    hint = idle
    if record.paused:
        return idle
    if record.phase is Phase.DEPLOYING:
        hint = record.phase_started_at + record.settings.deploy_timeout_s
        if record.healthy_since is not None:
            hint = min(hint, record.healthy_since + _warmup(record))
    elif record.phase is Phase.SWITCHING:
        hint = next_wake_switching(record)
        if record.unhealthy_since is not None:
            hint = record.unhealthy_since + record.settings.deploy_timeout_s
    elif record.phase is Phase.COMPLETING and record.cleanup_at is not None:
        hint = record.cleanup_at
    return min(hint, idle) if hint > now else idle


def _warmup(record: RolloutRecord) -> float:
    return record.settings.warmup_s if record.settings.validates else 0.0


# -- failures ----------------------------------------------------------------------------

_WATCHED = frozenset({Phase.DEPLOYING, Phase.VALIDATING, Phase.AWAITING_PROMOTION,
                      Phase.SWITCHING, Phase.COMPLETING})


def _check_failures(
    record: RolloutRecord, obs: Observations, now: float
) -> tuple[RolloutRecord, list[EmitEvent]]:
    if record.phase is Phase.ROLLING_BACK:
        if obs.action_failures >= MAX_UNDO_FAILURES and obs.applied_seq < record.seq:
            reason = f"rolling back failed {obs.action_failures} times: {obs.action_error}"
            done = replace(record, phase=Phase.FAILED, phase_started_at=now, ended_at=now,
                           undo_failed=True, reason=reason,
                           failure=(*record.failure, reason))
            return done, [_event("rollout.failed", done, reason)]
        return record, []
    if record.phase not in _WATCHED:
        return record, []
    reasons: list[str] = []
    for inst in obs.of_version(record.to_version):
        if inst.start_error:
            reasons.append(f"instance {inst.instance_id} of {record.to_version} on "
                           f"{inst.host_id} could not start: {inst.start_error}")
        elif inst.escalated:
            reasons.append(f"instance {inst.instance_id} of {record.to_version} on "
                           f"{inst.host_id} escalated: the agent could not heal it")
    if obs.action_failures >= MAX_ACTION_FAILURES and obs.applied_seq < record.seq:
        reasons.append(f"{record.phase.value} failed {obs.action_failures} times: "
                       f"{obs.action_error}")
    if record.unhealthy_since is not None and record.phase is Phase.SWITCHING and (
        now >= record.unhealthy_since + record.settings.deploy_timeout_s
    ):
        reasons.append(f"instances of {record.to_version} unhealthy for "
                       f"{now - record.unhealthy_since:g} s")
    if record.phase is Phase.DEPLOYING:
        deadline = record.phase_started_at + record.settings.deploy_timeout_s
        healthy = sum(1 for i in obs.of_version(record.to_version) if i.healthy)
        if now >= deadline and healthy < record.settings.replicas:
            reasons.append(f"only {healthy} of {record.settings.replicas} instance(s) of "
                           f"{record.to_version} healthy after "
                           f"{record.settings.deploy_timeout_s:g} s")
    if not reasons:
        return record, []
    end = Phase.ROLLED_BACK if record.traffic_moved else Phase.FAILED
    moved = start_rollback(record, now, end, tuple(reasons))
    return moved, [_event("rollout.failed", moved, "; ".join(reasons))]


# -- progress ----------------------------------------------------------------------------


def _advance(
    record: RolloutRecord, obs: Observations, now: float
) -> tuple[RolloutRecord, list[EmitEvent]]:
    phase = record.phase
    applied = obs.applied_seq >= record.seq
    if phase is Phase.PENDING:
        moved = replace(record, phase=Phase.DEPLOYING, phase_started_at=now)
        what = "first deploy of" if not record.has_stable else (
            f"{record.settings.strategy.value} rollout of")
        return moved, [_event("rollout.started", moved,
                              f"{what} {record.unit} {record.from_version or '-'} -> "
                              f"{record.to_version}", strategy=record.settings.strategy.value)]
    if not applied or record.paused:
        return record, []
    if phase is Phase.DEPLOYING:
        return _deploying(record, obs, now)
    if phase is Phase.VALIDATING:
        return _validating(record, obs, now)
    if phase is Phase.SWITCHING:
        healthy = sum(1 for i in obs.of_version(record.to_version) if i.healthy)
        if healthy < record.settings.replicas and record.unhealthy_since is None:
            return replace(record, unhealthy_since=now), []
        if healthy >= record.settings.replicas and record.unhealthy_since is not None:
            return replace(record, unhealthy_since=None), []
        return switch_step(record, obs, now, may_advance=record.unhealthy_since is None)
    if phase is Phase.COMPLETING:
        if record.cleanup_at is not None and now >= record.cleanup_at:
            moved = replace(record, phase=Phase.CLEANING, phase_started_at=now)
            return moved, [_event("rollout.step", moved,
                                  f"removing {record.from_version or 'nothing'}")]
        return record, []
    if phase is Phase.CLEANING:
        done = replace(record, phase=Phase.PROMOTED, phase_started_at=now, ended_at=now,
                       reason=f"{record.to_version} serves all traffic")
        return done, [_event("rollout.step", done, f"{record.to_version} is stable; "
                                                    f"{record.from_version or 'nothing'} removed")]
    if phase is Phase.ROLLING_BACK:
        end = record.end_phase or Phase.ROLLED_BACK
        done = replace(record, phase=end, phase_started_at=now, ended_at=now)
        return done, [_event("rollout.rolled_back", done,
                             f"{record.unit} back on {record.from_version or 'nothing'}; "
                             f"{record.to_version} removed", outcome=end.value,
                             reasons="; ".join(record.failure))]
    return record, []


def _deploying(
    record: RolloutRecord, obs: Observations, now: float
) -> tuple[RolloutRecord, list[EmitEvent]]:
    healthy = [i for i in obs.of_version(record.to_version) if i.healthy]
    if len(healthy) < record.settings.replicas:
        return record, []
    if record.healthy_since is None:
        return replace(record, healthy_since=now), []
    if now < record.healthy_since + _warmup(record):
        return record, []
    if record.settings.validates:
        moved = replace(record, phase=Phase.VALIDATING, phase_started_at=now)
        return moved, [_event("rollout.step", moved,
                              f"{len(healthy)} instance(s) of {record.to_version} healthy; "
                              "validating")]
    return enter_switching(record, now)


def _validating(
    record: RolloutRecord, obs: Observations, now: float
) -> tuple[RolloutRecord, list[EmitEvent]]:
    report = obs.checks
    if report is None or report.seq != record.seq:
        return record, []
    new = obs.of_version(record.to_version)
    healthy = len(new) >= record.settings.replicas and all(i.healthy for i in new)
    verdict = judge_green(record.settings.blue_green_plan(), healthy, report.failed_checks,
                          report.p95_ms)
    if verdict.outcome is not Outcome.PASS:
        moved = start_rollback(record, now, Phase.FAILED, verdict.reasons)
        moved = replace(moved, validation=verdict.reasons)
        return moved, [_event("rollout.failed", moved,
                              "validation failed: " + "; ".join(verdict.reasons))]
    if record.settings.manual_promotion:
        moved = replace(record, phase=Phase.AWAITING_PROMOTION, phase_started_at=now,
                        validation=verdict.reasons)
        return moved, [_event("rollout.step", moved,
                              f"{record.to_version} validated; waiting for promote")]
    entered, events = enter_switching(replace(record, validation=verdict.reasons), now)
    return entered, [_event("rollout.step", entered, f"{record.to_version} validated"),
                     *events]
