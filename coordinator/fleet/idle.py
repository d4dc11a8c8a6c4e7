"""Which units are idle and get collected (scaled to zero): a pure decision.

The leader decides, not an agent: a request may enter the unit on any host, and only the
leader sees every host's request windows. A unit is idle when no request reached it on any
host for its stable version's idle timeout, counted from the latest of: its last request,
the moment this leader took over (a new leader has no windows yet), its latest instance
start and its latest wake, plus ``WINDOW_LAG_S``: a request is known to the leader only
once its host's window (1 s buckets) is completed and reported. Then every instance of it
is collected, its placement kept (``InstanceRecord.collected_at``). Never collected: a
unit without an idle timeout, one that is not ``running`` (a rollout, a stop, a failure),
one with an instance that is not settled (starting, stopping, recovering): collecting it
would race with that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common.lifecycle import DeployState, InstanceState
from coordinator.state.records import InstanceRecord

__all__ = ["SETTLED_STATES", "WINDOW_LAG_S", "Collect", "UnitActivity", "plan_idle"]

WINDOW_LAG_S = 5.0
"""How late a request may reach the leader: the agent's window bucket (1 s), its report
interval (1 s) and the stream, with room to spare."""

SETTLED_STATES = frozenset({InstanceState.RUNNING.value, InstanceState.COLLECTED.value})
"""Observed states in which an instance may be collected (or is already)."""


@dataclass(frozen=True)
class UnitActivity:
    """What the decision needs to know about one unit."""

    apartment: str
    unit: str
    state: str
    """The unit record's ``DeployState`` value."""
    timeout_s: float
    """The stable version's idle timeout (0: never collected)."""
    instances: tuple[InstanceRecord, ...]
    observed: Mapping[str, str]
    """Instance id -> its observed state (missing: not reported)."""
    last_request: float
    """End of the latest window with a request for the unit, on any host (0: none seen)."""
    since: float
    """The latest of: leader took over, an instance started, the unit was woken."""
    rolling: bool = False


@dataclass(frozen=True)
class Collect:
    apartment: str
    unit: str
    instance_ids: tuple[str, ...]
    idle_s: float
    timeout_s: float

    @property
    def reason(self) -> str:
        return (f"no request on any host for {self.idle_s:.0f} s "
                f"(idle timeout {self.timeout_s:g} s)")


def plan_idle(units: Iterable[UnitActivity], now: float,
              lag: float = WINDOW_LAG_S) -> list[Collect]:
    """The units to collect now, each with the instances not collected yet."""
    out = []
    for unit in units:
        if unit.timeout_s <= 0 or unit.rolling or unit.state != DeployState.RUNNING.value:
            continue
        awake = [i for i in unit.instances if not i.collected]
        if not awake:
            continue
        if any(unit.observed.get(i.instance_id) not in SETTLED_STATES for i in awake):
            continue
        idle = now - max(unit.last_request, unit.since)
        if idle <= unit.timeout_s + lag:
            continue
        out.append(Collect(unit.apartment, unit.unit,
                           tuple(sorted(i.instance_id for i in awake)), idle, unit.timeout_s))
    return out
