"""Instance and unit-deploy state machines, and the lifecycle record of an instance.

Both tables are data; one validating function moves along them and every move records
when and why it happened. Time comes from the caller (an injected clock), never from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from common.clock import Clock
from common.errors import InvalidArgument, InvalidTransition

__all__ = [
    "DEPLOY_TRANSITIONS",
    "INSTANCE_TRANSITIONS",
    "MAX_HISTORY",
    "DeployState",
    "InstanceState",
    "LifecycleRecord",
    "Transition",
    "can_transition",
    "check_transition",
]


class InstanceState(StrEnum):
    """States of one container instance (plan section 6.2)."""

    CREATED = "created"
    INITIALIZING = "initializing"
    READY = "ready"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
    COLLECTED = "collected"
    """Scaled to zero after its unit was idle past its idle timeout: state backed up, container
    removed, resources freed on the host (its placement and port stay reserved on the
    coordinator). A wake starts it again, its state restored."""


class DeployState(StrEnum):
    """States of a unit as a whole while versions are deployed and rolled out.

    ``idle``: nothing deployed; ``running``: a stable version serves all traffic;
    ``deploying``: new instances are being placed, started and validated;
    ``rolling_out``: traffic is moving to the new version; ``rolling_back``: traffic is
    going back to the stable version and the new instances are being removed;
    ``failed``: a rollout could not finish or undo itself, or the stable version was marked
    failing (its instance escalated, was re-placed on another host and escalated there too:
    coordinator/fleet/escalations.py); it needs an operator (a deploy or a rollback);
    ``stopped``: an operator stopped it (``landlord units stop``): nothing runs, its versions
    and history stay, and a deploy starts it again like a first one.
    """

    IDLE = "idle"
    DEPLOYING = "deploying"
    ROLLING_OUT = "rolling_out"
    ROLLING_BACK = "rolling_back"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


_I = InstanceState
INSTANCE_TRANSITIONS: Mapping[InstanceState, frozenset[InstanceState]] = {
    _I.CREATED: frozenset({_I.INITIALIZING, _I.ERROR}),
    _I.INITIALIZING: frozenset({_I.READY, _I.ERROR}),
    _I.READY: frozenset({_I.RUNNING, _I.STOPPED}),
    _I.RUNNING: frozenset({_I.PAUSED, _I.STOPPING, _I.ERROR}),
    _I.PAUSED: frozenset({_I.RUNNING, _I.STOPPING}),
    _I.STOPPING: frozenset({_I.STOPPED, _I.ERROR, _I.COLLECTED}),
    _I.STOPPED: frozenset({_I.INITIALIZING}),
    _I.ERROR: frozenset({_I.INITIALIZING, _I.STOPPED}),
    # idle collection (coordinator/fleet/idle.py decides); a wake starts it again
    _I.COLLECTED: frozenset({_I.INITIALIZING, _I.STOPPED}),
}

_D = DeployState
DEPLOY_TRANSITIONS: Mapping[DeployState, frozenset[DeployState]] = {
    _D.IDLE: frozenset({_D.DEPLOYING, _D.STOPPED}),
    # validation of the new instances failed: undo them, or fail when there is no stable
    _D.DEPLOYING: frozenset({_D.ROLLING_OUT, _D.ROLLING_BACK, _D.FAILED}),
    _D.ROLLING_OUT: frozenset({_D.RUNNING, _D.ROLLING_BACK}),
    # back to the stable version, or to nothing when the first deployment failed
    _D.ROLLING_BACK: frozenset({_D.RUNNING, _D.IDLE, _D.FAILED}),
    # FAILED: the stable version crash-loops wherever it is placed (a version, not a host,
    # problem): its instances are not re-placed again
    _D.RUNNING: frozenset({_D.DEPLOYING, _D.IDLE, _D.STOPPED, _D.FAILED}),
    _D.FAILED: frozenset({_D.DEPLOYING, _D.ROLLING_BACK, _D.IDLE, _D.STOPPED}),
    # an operator's stop (coordinator/rollouts/unit_service.py); a deploy starts it again
    _D.STOPPED: frozenset({_D.DEPLOYING}),
}

S = TypeVar("S", bound=StrEnum)

MAX_HISTORY = 200
"""A record keeps at most this many transitions (oldest dropped) so crash loops stay small."""


def can_transition(table: Mapping[S, frozenset[S]], source: S, target: S) -> bool:
    """Whether ``table`` allows the move ``source -> target``."""
    return target in table.get(source, frozenset())


def check_transition(table: Mapping[S, frozenset[S]], source: S, target: S) -> None:
    """Raise ``InvalidTransition`` naming both states unless the table allows the move."""
    if can_transition(table, source, target):
        return
    allowed = ", ".join(sorted(state.value for state in table.get(source, frozenset())))
    raise InvalidTransition(
        f"invalid transition from {source.value} to {target.value}"
        f" (allowed from {source.value}: {allowed or 'nothing'})",
        from_state=source.value,
        to_state=target.value,
    )


@dataclass(frozen=True)
class Transition:
    """One recorded move: when, from where, to where, and why."""

    at: float
    from_state: str
    to_state: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"at": self.at, "from": self.from_state, "to": self.to_state, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Transition:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"a transition must be a JSON object, got {data!r}")
        return cls(
            at=_number(data, "at"),
            from_state=_text(data, "from"),
            to_state=_text(data, "to"),
            reason=_text(data, "reason"),
        )


@dataclass
class LifecycleRecord:
    """Lifecycle of one instance: its state, version, activity, health and history."""

    state: InstanceState
    version: str
    started_at: float
    last_activity: float
    health_score: float = 1.0
    metadata: dict[str, str] = field(default_factory=dict)
    history: list[Transition] = field(default_factory=list)

    @classmethod
    def new(
        cls, version: str, clock: Clock, metadata: dict[str, str] | None = None
    ) -> LifecycleRecord:
        """A fresh record in ``created`` with full health, stamped with ``clock.now()``."""
        now = clock.now()
        return cls(
            state=InstanceState.CREATED,
            version=version,
            started_at=now,
            last_activity=now,
            metadata=dict(metadata or {}),
        )

    def transition(self, to: InstanceState, reason: str, now: float) -> Transition:
        """Move to ``to`` if the table allows it, record why, and return the record."""
        check_transition(INSTANCE_TRANSITIONS, self.state, to)
        moved = Transition(at=now, from_state=self.state.value, to_state=to.value, reason=reason)
        self.state = to
        self.last_activity = max(self.last_activity, now)
        self.history.append(moved)
        del self.history[:-MAX_HISTORY]
        return moved

    def touch(self, now: float) -> None:
        """Note activity (a request served, a health check passed) at ``now``."""
        self.last_activity = max(self.last_activity, now)

    def set_health(self, score: float, now: float) -> None:
        """Record a health score between 0 (dead) and 1 (perfect)."""
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            raise InvalidArgument(
                f"health_score must be a number from 0 to 1, got {score!r}", health_score=score
            )
        self.health_score = score
        self.touch(now)

    def idle_for(self, now: float) -> float:
        """Seconds since the last activity (never negative)."""
        return max(0.0, now - self.last_activity)

    def to_dict(self) -> dict[str, object]:
        """JSON-safe form; ``from_dict`` reverses it."""
        return {
            "state": self.state.value,
            "version": self.version,
            "started_at": self.started_at,
            "last_activity": self.last_activity,
            "health_score": self.health_score,
            "metadata": dict(self.metadata),
            "history": [t.to_dict() for t in self.history],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LifecycleRecord:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"a lifecycle record must be a JSON object, got {data!r}")
        state_text = _text(data, "state")
        try:
            state = InstanceState(state_text)
        except ValueError:
            known = ", ".join(s.value for s in InstanceState)
            raise InvalidArgument(
                f"state {state_text!r} is not an instance state (one of: {known})",
                field="state",
            ) from None
        metadata = data.get("metadata", {})
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise InvalidArgument("metadata must map strings to strings", field="metadata")
        history = data.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
            raise InvalidArgument("history must be a list of transitions", field="history")
        record = cls(
            state=state,
            version=_text(data, "version"),
            started_at=_number(data, "started_at"),
            last_activity=_number(data, "last_activity"),
            metadata=dict(metadata),
            history=[Transition.from_dict(h) for h in history],
        )
        record.set_health(_number(data, "health_score"), record.last_activity)
        return record


def _text(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string, got {value!r}", field=key)
    return value


def _number(data: Mapping[str, object], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{key} must be a number, got {value!r}", field=key)
    return float(value)
