"""The rollout record: everything a leader needs to resume a rollout, as stored in etcd.

One record per rollout at ``{p}/rollouts/{apartment}/{unit}/{rollout_id}`` (compact JSON).
It is written (compare-and-swap on its mod revision) *before* the actions it implies are
carried out, and those actions are a pure function of the record (``engine.actions_for``),
so a new leader re-executes them harmlessly and goes on from there.

``seq`` counts committed changes; the runner tells the engine which ``seq`` it has fully
carried out (``Observations.applied_seq``) so a phase that waits for its actions (traffic
moved, instances stopped) moves on only once they are done.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from common.rollout_policy import Window
from coordinator.rollouts.settings import RolloutSettings, Strategy, known_fields
from coordinator.state.migrations import RECORDS, dumps

__all__ = [
    "ACTIVE_PHASES",
    "RETRY",
    "TERMINAL_PHASES",
    "Control",
    "Measurement",
    "Phase",
    "RolloutRecord",
    "StepRecord",
    "decode_record",
    "encode_record",
]


class Phase(StrEnum):
    PENDING = "pending"
    DEPLOYING = "deploying"
    """New instances placed and started; waiting until all are healthy (and warm)."""
    VALIDATING = "validating"
    """Blue-green: integration and performance checks of green."""
    AWAITING_PROMOTION = "awaiting_promotion"
    """Blue-green with manual promotion: green is valid, waiting for ``promote``."""
    SWITCHING = "switching"
    """Traffic moves step by step (one step for an immediate switch)."""
    COMPLETING = "completing"
    """All traffic on the new version; the old one is kept until the cleanup delay ends."""
    CLEANING = "cleaning"
    """The old version's instances are drained and stopped."""
    ROLLING_BACK = "rolling_back"
    """Traffic back to the stable version, new instances drained and stopped."""
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    ABORTED = "aborted"


TERMINAL_PHASES = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED, Phase.ABORTED})
ACTIVE_PHASES = frozenset(Phase) - TERMINAL_PHASES


class Control(StrEnum):
    PROMOTE = "promote"
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"


RETRY = "retry"
"""The operator's control that is not queued in a record: a new attempt of a failed one."""


@dataclass(frozen=True)
class Measurement:
    """A merged window of one version, reduced to the numbers a person reads."""

    requests: int = 0
    errors: int = 0
    duration_s: float = 0.0
    error_rate: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    throughput_rps: float | None = None
    latency_samples: int = 0
    """Requests the latency quantiles were measured on (the log's sampled lines)."""
    sample_every: int = 1
    """The hosts logged one request in this many (counts are exact, latency sampled)."""

    @classmethod
    def of(cls, window: Window) -> Measurement:
        def q(value: float) -> float | None:
            found = window.latency.quantile(value)
            return None if found is None else round(found, 3)

        return cls(
            requests=window.requests,
            errors=window.errors,
            duration_s=round(window.duration_s, 3),
            error_rate=window.error_rate,
            p50_ms=q(0.5),
            p95_ms=q(0.95),
            p99_ms=q(0.99),
            throughput_rps=window.throughput_rps,
            latency_samples=window.latency.count,
            sample_every=window.sample_every,
        )


@dataclass(frozen=True)
class StepRecord:
    """One traffic step: target share, timings, outcome and what was measured."""

    index: int
    percent: int
    started_at: float
    outcome: str = "active"
    """active, passed, failed, inconclusive (held), skipped."""
    ended_at: float | None = None
    canary: Measurement | None = None
    stable: Measurement | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutRecord:
    rollout_id: str
    apartment: str
    unit: str
    building: str
    from_version: str
    """The stable version when the rollout began ("" for a first deploy)."""
    to_version: str
    settings: RolloutSettings
    created_at: float
    new_slot: str = "green"
    old_instances: tuple[str, ...] = ()
    """Instances of the stable version when the rollout began (removed after promotion)."""
    phase: Phase = Phase.PENDING
    seq: int = 0
    updated_at: float = 0.0
    phase_started_at: float = 0.0
    ended_at: float | None = None
    paused: bool = False
    pending_controls: tuple[Control, ...] = ()
    new_percent: float = 0.0
    """Share of traffic the record has sent to the new version (0..100)."""
    traffic_moved: bool = False
    """Whether any traffic was ever sent to the new version (a rollback restores the split
    only then: a failure before the switch leaves traffic untouched)."""
    healthy_since: float | None = None
    """When every new instance was first seen healthy (warm-up counts from here)."""
    unhealthy_since: float | None = None
    """While switching: since when fewer new instances than asked are healthy (the step
    is held meanwhile, and fails after ``deploy_timeout_s``)."""
    step_index: int = 0
    step_phase: str = "monitoring"
    """common.canary.Phase of the current step: monitoring or waiting."""
    step_phase_started_at: float = 0.0
    step_extensions: int = 0
    window_start: float = 0.0
    """Start of the window the current step is judged on."""
    steps: tuple[StepRecord, ...] = ()
    validation: tuple[str, ...] = ()
    cleanup_at: float | None = None
    end_phase: Phase | None = None
    """While rolling back: the terminal phase to record (rolled_back, failed, aborted)."""
    undo_failed: bool = False
    """Rolling back could not be completed (the unit needs an operator)."""
    reason: str = ""
    failure: tuple[str, ...] = ()
    """Reasons (with the measurements) that failed the rollout."""
    attempt: int = 1
    retry_of: str = ""

    # -- queries ---------------------------------------------------------------------------

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def active(self) -> bool:
        return not self.terminal

    @property
    def has_stable(self) -> bool:
        return bool(self.from_version) and self.settings.strategy is not Strategy.INITIAL

    def split(self, percent: float | None = None) -> dict[str, float]:
        """Version -> percent for ``percent`` (default: the record's) on the new version."""
        share = self.new_percent if percent is None else percent
        if not self.has_stable:
            return {self.to_version: 100.0}
        if share >= 100:
            return {self.to_version: 100.0}
        if share <= 0:
            return {self.from_version: 100.0}
        return {self.from_version: 100.0 - share, self.to_version: float(share)}

    def public_phase(self) -> str:
        """The phase shown to people: ``paused`` while paused, else the phase."""
        if self.paused and self.active:
            return "paused"
        return self.phase.value

    def with_step(self, step: StepRecord) -> RolloutRecord:
        """The record with ``step`` replacing the step of the same index (or appended)."""
        kept = [s for s in self.steps if s.index != step.index]
        return replace(self, steps=tuple(sorted([*kept, step], key=lambda s: s.index)))

    def current_step(self) -> StepRecord | None:
        for step in self.steps:
            if step.index == self.step_index:
                return step
        return None

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "settings":
                value = value.to_dict()
            elif f.name == "steps":
                value = [_step_dict(s) for s in value]
            elif isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, tuple):
                value = [v.value if isinstance(v, StrEnum) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RolloutRecord:
        values = known_fields(cls, raw)
        values["settings"] = RolloutSettings.from_dict(raw["settings"])
        if not values.get("ended_at"):
            values["ended_at"] = None
        values["phase"] = Phase(raw.get("phase", Phase.PENDING.value))
        if raw.get("end_phase"):
            values["end_phase"] = Phase(raw["end_phase"])
        values["pending_controls"] = tuple(Control(c) for c in raw.get("pending_controls", ()))
        values["steps"] = tuple(_step_from(s) for s in raw.get("steps", ()))
        for name in ("old_instances", "validation", "failure"):
            values[name] = tuple(raw.get(name, ()))
        return cls(**values)


def _step_dict(step: StepRecord) -> dict[str, Any]:
    out: dict[str, Any] = {f.name: getattr(step, f.name) for f in fields(step)}
    for side in ("canary", "stable"):
        m = out[side]
        out[side] = None if m is None else {g.name: getattr(m, g.name) for g in fields(m)}
    out["reasons"] = list(step.reasons)
    return out


def _step_from(raw: Mapping[str, Any]) -> StepRecord:
    values = known_fields(StepRecord, raw)
    for side in ("canary", "stable"):
        if values.get(side) is not None:
            values[side] = Measurement(**values[side])
    values["reasons"] = tuple(values.get("reasons", ()))
    return StepRecord(**values)


def encode_record(record: RolloutRecord) -> bytes:
    """Stamped with this release's record schema (coordinator/state/migrations.py)."""
    return dumps(RECORDS.stamp(record.to_dict()))


def decode_record(data: bytes) -> RolloutRecord:
    """Migrated to this release's record schema first."""
    return RolloutRecord.from_dict(RECORDS.migrate("rollouts", json.loads(data)))
