"""What the rollout engine asks the runner to do, and what the runner tells it back.

Actions are plain values. Every action except ``EmitEvent`` and ``Wait`` is idempotent: the
runner may carry out the actions of the last committed record again after a leader change
(``engine.actions_for``) and nothing changes a second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from common.rollout_policy import Window
from coordinator.rollouts.settings import CheckSpec

__all__ = [
    "Action",
    "CheckReport",
    "EmitEvent",
    "InstanceView",
    "Observations",
    "RunChecks",
    "SetSplit",
    "SetUnitState",
    "StartInstances",
    "StopInstances",
    "Wait",
]


@dataclass(frozen=True)
class StartInstances:
    """Make ``replicas`` instances of ``version`` in ``slot`` exist and run (places only the
    missing ones; starting one that runs already is a no-op on the agent)."""

    version: str
    slot: str
    replicas: int
    state_from: tuple[str, ...] = ()
    """Snapshot mode: stable instances whose state a new one may copy (same host first)."""


@dataclass(frozen=True)
class SetSplit:
    """Record the traffic split and send it to every host of the building at once."""

    split: Mapping[str, float]
    """Version -> percent, summing to 100."""
    sticky: bool = False
    """Keep clients on the version that served them (a sticky rollout's steps only)."""


@dataclass(frozen=True)
class StopInstances:
    """Drain, then stop and remove every instance of ``version`` of the unit (none left:
    nothing to do)."""

    version: str
    drain: bool = True


@dataclass(frozen=True)
class RunChecks:
    """Validate the new version: integration checks and a performance burst through the
    preview route (the version-pinning header on a host's entry point)."""

    version: str
    checks: tuple[CheckSpec, ...]
    performance_requests: int
    measure_latency: bool

    @property
    def through_entry_point(self) -> bool:
        """HTTP checks or a performance burst (command checks run in a green container and
        need no entry point)."""
        return any(not check.exec_argv for check in self.checks) or (
            self.measure_latency and self.performance_requests > 0)


@dataclass(frozen=True)
class SetUnitState:
    """Move the unit's deploy state (validated against common.lifecycle's table)."""

    state: str
    stable_version: str = ""
    """Set as the unit's stable version when not empty."""


@dataclass(frozen=True)
class EmitEvent:
    """Append one event (rollout.started, rollout.step, ...). Not repeated on resume."""

    type: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """Nothing to do before ``until`` (epoch seconds) unless an observation changes."""

    until: float


Action = StartInstances | SetSplit | StopInstances | RunChecks | SetUnitState | EmitEvent | Wait


@dataclass(frozen=True)
class InstanceView:
    """One instance of the unit as the fleet last saw it."""

    instance_id: str
    host_id: str
    version: str
    healthy: bool
    state: str = "running"
    escalated: bool = False
    """The agent gave up healing it (recovery retries exhausted)."""
    start_error: str = ""
    """Why its agent could not start it (``instance.start_failed``: a failed image pull,
    say), "" when it did not fail to start."""


@dataclass(frozen=True)
class CheckReport:
    """The result of ``RunChecks`` carried out for record ``seq``."""

    seq: int
    failed_checks: tuple[str, ...] = ()
    p95_ms: float | None = None


@dataclass(frozen=True)
class Observations:
    """What the runner saw just before asking the engine."""

    instances: tuple[InstanceView, ...] = ()
    applied_seq: int = 0
    """The last record ``seq`` whose actions were all carried out."""
    canary: Window | None = None
    """The new version's requests since ``record.window_start``, merged over all hosts."""
    stable: Window | None = None
    """The stable version's requests over the same period."""
    checks: CheckReport | None = None
    action_error: str = ""
    """Why carrying out the actions of the current ``seq`` failed ("" if not)."""
    action_failures: int = 0
    """How many times in a row they failed."""

    def of_version(self, version: str) -> tuple[InstanceView, ...]:
        return tuple(i for i in self.instances if i.version == version)
