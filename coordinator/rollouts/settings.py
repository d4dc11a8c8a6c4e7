"""What a rollout was asked to do: strategy, replicas, steps, checks and criteria.

Frozen, JSON-safe (``to_dict``/``from_dict``) so it lives inside the rollout record in etcd,
and turned into the domain plans of ``common.canary`` and ``common.bluegreen`` on demand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from common.bluegreen import BlueGreenPlan, SwitchMode
from common.canary import DEFAULT_STEPS, CanaryPlan, validate_steps
from common.errors import InvalidArgument
from common.input_bounds import (
    MAX_ARG_BYTES,
    MAX_CHECKS,
    MAX_EXPECTED_TEXT_BYTES,
    MAX_GRADUAL_STEPS,
    MAX_LATENCY_MS,
    MAX_PERFORMANCE_REQUESTS,
    MAX_REPLICAS,
    MAX_ROLLOUT_SECONDS,
    check_argv,
    check_count,
    check_length,
    check_path,
    check_seconds,
    check_text,
)
from common.rollout_policy import ComparisonCriteria, SuccessCriteria
from common.unit_spec import StateMode

__all__ = [
    "CheckSpec",
    "RolloutSettings",
    "StateMode",
    "Strategy",
    "criteria_from_dict",
    "criteria_to_dict",
    "equal_steps",
    "known_fields",
]


class Strategy(StrEnum):
    BLUE_GREEN = "blue_green"
    CANARY = "canary"
    ROLLBACK = "rollback"
    """The fast path back to a kept version: start it, switch at once, no analysis."""
    INITIAL = "initial"
    """The first deploy of a unit: start it and give it all traffic."""


@dataclass(frozen=True)
class CheckSpec:
    """One integration check of green: an HTTP request or a command in a green container."""

    path: str = ""
    """HTTP path requested through the preview route (empty for a command check)."""
    expect_status: int = 200
    expect_body_contains: str = ""
    command: str = ""
    """Shell line run with ``sh -c`` in a green container (or use ``argv``)."""
    argv: tuple[str, ...] = ()
    """Command run as is (no shell) in a green container."""
    expect_exit_code: int = 0
    expect_output_contains: str = ""
    """Command checks: text stdout or stderr must contain ("" = any)."""
    timeout_s: float = 30.0
    """Command checks: how long the command may run before it is killed and fails."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(self.argv))
        if [bool(self.path), bool(self.command), bool(self.argv)].count(True) != 1:
            raise InvalidArgument("an integration check is either an HTTP path or a command")
        if self.path:
            check_path("check path", self.path)  # sent in a request line: no CR, LF, space
        check_text("check command", self.command, MAX_ARG_BYTES)
        check_argv("check argv", self.argv)
        check_count("expect_status", self.expect_status, 100, 599)
        check_count("expect_exit_code", self.expect_exit_code, 0, 255)
        for name in ("expect_body_contains", "expect_output_contains"):
            check_text(name, getattr(self, name), MAX_EXPECTED_TEXT_BYTES)
        check_seconds("check timeout", self.timeout_s, 300, positive=True)

    @property
    def exec_argv(self) -> tuple[str, ...]:
        """What a command check runs in the container (empty for an HTTP check)."""
        return ("sh", "-c", self.command) if self.command else self.argv

    @property
    def name(self) -> str:
        if self.command:
            return f"command {self.command!r}"
        if self.argv:
            return f"command {list(self.argv)!r}"
        body = f" containing {self.expect_body_contains!r}" if self.expect_body_contains else ""
        return f"GET {self.path} -> {self.expect_status}{body}"


def equal_steps(count: int) -> tuple[int, ...]:
    """``count`` equal shares ending at 100 (4 -> 25, 50, 75, 100)."""
    check_count("gradual_steps", count, 1, MAX_GRADUAL_STEPS)
    steps = sorted({max(1, round(100 * i / count)) for i in range(1, count + 1)})
    return tuple(steps)


def known_fields(cls: type, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``raw`` that name a field of dataclass ``cls`` (a newer coordinator's
    extra fields are left out, so its records stay readable)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def criteria_to_dict(criteria: SuccessCriteria) -> dict[str, Any]:
    return {f.name: getattr(criteria, f.name) for f in fields(criteria)}


def criteria_from_dict(raw: Mapping[str, Any]) -> SuccessCriteria:
    return SuccessCriteria(**known_fields(SuccessCriteria, raw))


@dataclass(frozen=True)
class RolloutSettings:
    """Everything a Deploy request decided, with defaults from the design."""

    strategy: Strategy = Strategy.CANARY
    replicas: int = 1
    """Instances of the new version (the stable version keeps its own)."""
    steps: tuple[int, ...] = DEFAULT_STEPS
    """Canary steps (canary strategy, or blue-green with a canary switch)."""
    monitor_s: float = 60.0
    """How long each canary step is watched before it is judged."""
    step_delay_s: float = 10.0
    """Pause after a canary step passes before the next share is set."""
    inconclusive_deadline_s: float = 300.0
    """How long a step may stay inconclusive (too few requests) before it fails."""
    criteria: SuccessCriteria = field(default_factory=SuccessCriteria)
    comparison: ComparisonCriteria | None = field(default_factory=ComparisonCriteria)
    """Canary against stable in the same window (None: not compared)."""
    switch: SwitchMode = SwitchMode.IMMEDIATE
    warmup_s: float = 5.0
    """Blue-green: seconds green runs healthy before it is validated."""
    checks: tuple[CheckSpec, ...] = ()
    max_latency_p95_ms: float | None = None
    """Blue-green performance check threshold (None: no performance check)."""
    performance_requests: int = 50
    cleanup_delay_s: float = 30.0
    """Seconds after the switch before the old version's instances are removed."""
    gradual_steps: int = 4
    gradual_step_delay_s: float = 10.0
    manual_promotion: bool = False
    """Blue-green: wait for ``promote`` before switching traffic."""
    deploy_timeout_s: float = 300.0
    """New instances must all be healthy within this or the rollout fails."""
    state_mode: StateMode = StateMode.NONE
    sticky: bool = False
    """Sticky canary: a client stays on the version that first served it (cookie) through
    every traffic step, until promotion or rollback."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", Strategy(self.strategy))
        object.__setattr__(self, "switch", SwitchMode(self.switch))
        object.__setattr__(self, "state_mode", StateMode(self.state_mode))
        # every bound is checked before anything proportional to it is done or stored
        check_count("replicas", self.replicas, 1, MAX_REPLICAS)
        check_count("gradual_steps", self.gradual_steps, 1, MAX_GRADUAL_STEPS)
        check_count("performance_requests", self.performance_requests, 0,
                    MAX_PERFORMANCE_REQUESTS)
        check_length("checks", self.checks, MAX_CHECKS, "checks")
        object.__setattr__(self, "steps", validate_steps(tuple(self.steps)))
        object.__setattr__(self, "checks", tuple(self.checks))
        for name in ("monitor_s", "step_delay_s", "inconclusive_deadline_s", "warmup_s",
                     "cleanup_delay_s", "gradual_step_delay_s", "deploy_timeout_s"):
            check_seconds(name, getattr(self, name), MAX_ROLLOUT_SECONDS)
        limit = self.max_latency_p95_ms
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                                  or not 0 < limit <= MAX_LATENCY_MS):
            raise InvalidArgument(f"max_latency_p95_ms must be > 0 and <= {MAX_LATENCY_MS:g}",
                                  field="max_latency_p95_ms")

    # -- domain plans ----------------------------------------------------------------------

    def canary_plan(self) -> CanaryPlan:
        """The canary step machine's plan; the deadline becomes extra monitoring periods."""
        extensions = 0
        if self.monitor_s > 0:
            extensions = max(0, math.ceil(self.inconclusive_deadline_s / self.monitor_s) - 1)
        return CanaryPlan(self.steps, self.monitor_s, self.step_delay_s, self.criteria,
                          extensions)

    def blue_green_plan(self) -> BlueGreenPlan:
        return BlueGreenPlan(
            switch=self.switch,
            cleanup_delay_s=self.cleanup_delay_s,
            warmup_s=self.warmup_s,
            max_latency_p95_ms=self.max_latency_p95_ms,
            gradual_steps=equal_steps(self.gradual_steps),
            gradual_step_delay_s=self.gradual_step_delay_s,
            canary=self.canary_plan(),
        )

    @property
    def validates(self) -> bool:
        """Whether green is validated (health, checks, performance) before the switch."""
        return self.strategy is Strategy.BLUE_GREEN

    @property
    def judged(self) -> bool:
        """Whether traffic steps are judged on metrics (canary steps)."""
        return self.strategy is Strategy.CANARY or (
            self.strategy is Strategy.BLUE_GREEN and self.switch is SwitchMode.CANARY
        )

    def traffic_steps(self) -> tuple[int, ...]:
        if self.strategy is Strategy.BLUE_GREEN:
            return self.blue_green_plan().traffic_steps()
        if self.strategy is Strategy.CANARY:
            return self.steps
        return (100,)

    def step_plan(self) -> CanaryPlan:
        """The step machine for the switch: judged canary steps, or unjudged steps."""
        if self.judged:
            return self.canary_plan()
        if self.strategy is Strategy.BLUE_GREEN and self.switch is SwitchMode.GRADUAL:
            return CanaryPlan(equal_steps(self.gradual_steps), 0.0, self.gradual_step_delay_s,
                              self.criteria, 0)
        return CanaryPlan((100,), 0.0, 0.0, self.criteria, 0)

    @property
    def effective_cleanup_delay_s(self) -> float:
        return 0.0 if self.strategy in (Strategy.ROLLBACK, Strategy.INITIAL) else (
            self.cleanup_delay_s
        )

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "criteria":
                value = criteria_to_dict(value)
            elif f.name == "comparison":
                value = None if value is None else {
                    g.name: getattr(value, g.name) for g in fields(value)
                }
            elif f.name == "checks":
                value = [{g.name: getattr(c, g.name) for g in fields(c)} for c in value]
            elif f.name == "steps":
                value = list(value)
            elif isinstance(value, StrEnum):
                value = value.value
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RolloutSettings:
        values = known_fields(cls, raw)
        if "criteria" in values:
            values["criteria"] = criteria_from_dict(values["criteria"])
        if "comparison" in values and values["comparison"] is not None:
            values["comparison"] = ComparisonCriteria(**values["comparison"])
        if "checks" in values:
            values["checks"] = tuple(CheckSpec(**c) for c in values["checks"])
        if "steps" in values:
            values["steps"] = tuple(values["steps"])
        return cls(**values)
