"""Which instances a pause or a resume changes, and what it refuses (pure).

``coordinator/rollouts/pause_service.py`` reads the facts from the cache, asks here, then
writes the instances' ``paused`` marks in one fenced transaction and acts. The rules:

- any pause while a rollout of the unit is active: FAILED_PRECONDITION naming it (the
  caller passes ``one_active.already_active``'s error); a resume is allowed (it only gives
  back capacity that serves);
- instances named that are not the unit's: NOT_FOUND naming them;
- a unit without instances: FAILED_PRECONDITION (nothing to pause);
- pausing an instance that its host does not report running (starting, failed, or its
  host silent): FAILED_PRECONDITION naming it and its state, so nothing is marked paused
  that the host cannot freeze;
- an instance already as asked is left out: pausing a paused one or resuming one that is
  not paused changes nothing (an idempotent no-op, ``changed`` false).

A deploy, rollback or scale of a unit with a paused instance is refused
(``refuse_paused``): a rollout would judge and replace frozen instances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.errors import FailedPrecondition, NotFound
from common.lifecycle import InstanceState
from coordinator.state.records import InstanceRecord

__all__ = ["PausePlan", "plan_pause", "refuse_paused"]

PAUSABLE = frozenset({InstanceState.RUNNING.value, InstanceState.PAUSED.value})


@dataclass(frozen=True)
class PausePlan:
    change: tuple[str, ...]
    """Instances whose ``paused`` mark flips, sorted."""
    paused_after: tuple[str, ...]
    """Instances of the unit paused once the change is made, sorted."""
    whole: bool
    """Every instance of the unit is paused afterwards."""


def plan_pause(name: str, instances: Sequence[InstanceRecord], asked: Sequence[str],
               pause: bool, observed: Mapping[str, str]) -> PausePlan:
    """The plan of pausing (``pause``) or resuming the ``asked`` instances of the unit
    ``name`` (all of them when ``asked`` is empty); ``observed``: instance -> the state its
    host reports (absent: not reported)."""
    if not instances:
        verb = "pause" if pause else "resume"
        raise FailedPrecondition(f"{name} has no instance to {verb} (deploy it first)",
                                 unit=name.partition("/")[2])
    by_id = {i.instance_id: i for i in instances}
    unknown = sorted(set(asked) - set(by_id))
    if unknown:
        raise NotFound(f"{name} has no instance {', '.join(unknown)} (`landlord instances "
                       f"list --unit {name}` shows them)", instance=unknown[0])
    chosen = sorted(set(asked)) if asked else sorted(by_id)
    change = [iid for iid in chosen if by_id[iid].paused != pause]
    if pause:
        blocked = [f"{iid} ({observed.get(iid) or 'not reported by its host'})"
                   for iid in change if observed.get(iid) not in PAUSABLE]
        if blocked:
            raise FailedPrecondition(
                f"{name}: only running instances can be paused: {', '.join(blocked)}",
                unit=name.partition("/")[2], instance=blocked[0].split()[0])
    flipped = set(change)
    paused_after = sorted(iid for iid, inst in by_id.items()
                          if (pause if iid in flipped else inst.paused))
    return PausePlan(tuple(change), tuple(paused_after), len(paused_after) == len(by_id))


def refuse_paused(name: str, instances: Sequence[InstanceRecord], action: str) -> None:
    """FAILED_PRECONDITION naming the unit's paused instances, if it has any."""
    paused = sorted(i.instance_id for i in instances if i.paused)
    if paused:
        raise FailedPrecondition(
            f"{name} cannot be {action} while instances are paused ({', '.join(paused)}); "
            f"resume them first with `landlord units resume {name}`",
            unit=name.partition("/")[2], paused=",".join(paused))
