"""Whether an operator may stop, delete or scale a unit, and what changes (pure).

``coordinator/rollouts/unit_service.py`` reads the facts from the cache, asks here, then
writes the answer in one fenced transaction and acts. Refusals name what is wrong:

- any of the three while a rollout of the unit is active: FAILED_PRECONDITION naming it
  (the caller passes ``one_active.already_active``'s error);
- delete while the unit is not stopped (it has instances, or a stable version runs):
  FAILED_PRECONDITION saying to stop it first;
- delete while running units depend on it: FAILED_PRECONDITION naming them (a unit of an
  apartment the caller does not reach is named only as "a unit of another apartment");
- scale of a unit that runs no stable version (never deployed, stopped, failed):
  FAILED_PRECONDITION; a count outside 1..MAX_REPLICAS: INVALID_ARGUMENT.

Scaling down removes, in order: instances that are not healthy (the newest first), then one
at a time from the host that runs the most of the unit's instances (the newest first), so the
instances left stay spread over the hosts as evenly as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from common.dependencies import parse_dependency
from common.errors import FailedPrecondition, InvalidArgument
from common.input_bounds import MAX_REPLICAS, check_count
from common.lifecycle import DEPLOY_TRANSITIONS, DeployState, check_transition
from coordinator.state.records import UnitRecord, VersionRecord

__all__ = [
    "InstanceFacts",
    "check_scale_count",
    "choose_removals",
    "deletable",
    "dependants",
    "refuse_dependants",
    "scaled",
    "stopped",
]

STOPPABLE_WITHOUT_INSTANCES = frozenset({DeployState.IDLE.value, DeployState.STOPPED.value})
"""States in which a unit with no instance has nothing to stop (and may be deleted)."""


@dataclass(frozen=True)
class InstanceFacts:
    """What choosing instances to remove needs to know about one."""

    instance_id: str
    host_id: str
    healthy: bool
    created_at: float


def check_scale_count(replicas: object) -> int:
    """The replica count of a scale (1..MAX_REPLICAS), else INVALID_ARGUMENT saying why."""
    if replicas == 0:
        raise InvalidArgument("replicas must be at least 1; to stop every instance of the "
                              "unit use `landlord units stop`", field="replicas")
    return check_count("replicas", replicas, 1, MAX_REPLICAS)


def stopped(unit: UnitRecord, has_instances: bool, now: float) -> UnitRecord | None:
    """The unit record after a stop, or None when there is nothing to change (already
    stopped, or never deployed, with no instance left)."""
    if not has_instances and unit.state in STOPPABLE_WITHOUT_INSTANCES and (
            not unit.stable_version):
        return None
    if unit.state != DeployState.STOPPED.value:
        check_transition(DEPLOY_TRANSITIONS, DeployState(unit.state or "idle"),
                         DeployState.STOPPED)
    # no stable version: a later deploy starts the unit like a first one (strategy initial)
    return replace(unit, state=DeployState.STOPPED.value, stable_version="", replicas=0,
                   updated_at=now)


def deletable(unit: UnitRecord, instances: int) -> None:
    """FAILED_PRECONDITION unless the unit is stopped (or was never deployed) and has no
    instance left."""
    name = f"{unit.apartment}/{unit.unit}"
    if instances or unit.state not in STOPPABLE_WITHOUT_INSTANCES or unit.stable_version:
        state = unit.state or DeployState.IDLE.value
        raise FailedPrecondition(
            f"{name} is not stopped ({state}, {instances} instance(s)); stop it first with "
            f"`landlord units stop {name}`", unit=unit.unit, state=state)


def dependants(apartment: str, unit: str, running: Mapping[tuple[str, str], Iterable[str]],
               versions: Mapping[tuple[str, str], Mapping[str, VersionRecord]]) -> list[str]:
    """The other units (``apartment/unit``) with an instance of a version that depends on
    ``apartment/unit``; ``running`` maps a unit to the versions its instances run."""
    target = f"{apartment}/{unit}"
    found = set()
    for key, running_versions in running.items():
        if key == (apartment, unit):
            continue
        published = versions.get(key, {})
        for version in running_versions:
            record = published.get(version)
            if record is None:
                continue
            if any(parse_dependency(text, key[0]).unit == target
                   for text in record.tag.spec.dependencies):
                found.add(f"{key[0]}/{key[1]}")
    return sorted(found)


def refuse_dependants(apartment: str, unit: str, found: Sequence[str],
                      reach: Callable[[str], bool]) -> None:
    """FAILED_PRECONDITION naming the running units that depend on ``apartment/unit``
    (those of apartments the caller does not reach only counted)."""
    if not found:
        return
    named = [name for name in found if reach(name.partition("/")[0])]
    hidden = len(found) - len(named)
    parts = named + ([f"{hidden} unit(s) of another apartment"] if hidden else [])
    raise FailedPrecondition(
        f"{apartment}/{unit} cannot be deleted: running units depend on it: "
        f"{', '.join(parts)}; stop them first or deploy versions that do not need it",
        unit=unit, dependants=named)


def scaled(unit: UnitRecord, replicas: int, now: float) -> UnitRecord:
    """The unit record with ``replicas`` (FAILED_PRECONDITION unless a stable version
    runs)."""
    name = f"{unit.apartment}/{unit.unit}"
    if not unit.stable_version or unit.state != DeployState.RUNNING.value:
        state = unit.state or DeployState.IDLE.value
        raise FailedPrecondition(
            f"{name} is {state}: only a unit running a stable version can be scaled"
            + (" (deploy it first)" if state in STOPPABLE_WITHOUT_INSTANCES else ""),
            unit=unit.unit, state=state)
    return replace(unit, replicas=replicas, updated_at=now)


def choose_removals(instances: Sequence[InstanceFacts], keep: int) -> list[str]:
    """The ids of ``len(instances) - keep`` instances to remove (see the module doc)."""
    count = max(0, len(instances) - keep)
    unhealthy = sorted((i for i in instances if not i.healthy),
                       key=lambda i: (-i.created_at, i.instance_id))
    chosen = [i.instance_id for i in unhealthy[:count]]
    left = [i for i in instances if i.healthy]
    per_host: dict[str, list[InstanceFacts]] = {}
    for inst in left:
        per_host.setdefault(inst.host_id, []).append(inst)
    for found in per_host.values():
        found.sort(key=lambda i: (i.created_at, i.instance_id))
    while len(chosen) < count:
        host = max(sorted(per_host), key=lambda h: len(per_host[h]))
        chosen.append(per_host[host].pop().instance_id)
        if not per_host[host]:
            del per_host[host]
    return chosen
