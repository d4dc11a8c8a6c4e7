"""Whether a Deploy may start a rollout, decided from cluster facts (pure).

A unit's first deploy is a rollout like any other, with no stable version: strategy
``initial`` (start the instances, then give them all traffic). Refusals, each with a
message that names what is wrong:

- no building named, the unit has none, and the hosts are in several (INVALID_ARGUMENT);
- the version is not published (FAILED_PRECONDITION, naming the published ones);
- it is already the stable version (FAILED_PRECONDITION);
- another rollout of the unit is active (FAILED_PRECONDITION, naming it and its phase;
  enforced again in etcd by the transaction that creates the record: one_active.py);
- a dependency is not running in its apartment at a version inside its range
  (FAILED_PRECONDITION, naming every one that is not, with what runs instead);
- the version's service port is the entry point of another apartment's unit in the building
  (FAILED_PRECONDITION, not naming that unit): every host's HAProxy would bind both on the
  same port and the kernel would split that unit's connections between the two;
- the building cannot hold the new instances next to the running ones (RESOURCE_EXHAUSTED,
  from coordinator/fleet/placement.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from common.dependencies import parse_dependency
from common.errors import FailedPrecondition, InvalidArgument
from common.semantic_versions import satisfies
from coordinator.fleet.placement import HostRoom, PlacementRequest, place
from coordinator.rollouts.controls import new_rollout
from coordinator.rollouts.one_active import already_active
from coordinator.rollouts.record import RolloutRecord
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.state.records import InstanceRecord, RouteRecord, UnitRecord, VersionRecord

__all__ = ["DeployFacts", "DeployRequest", "admit", "check_dependencies", "check_entry_point",
           "choose_building", "other_slot"]



@dataclass(frozen=True)
class DeployRequest:
    """An operator's Deploy: move ``apartment/unit`` to ``version`` with ``settings``."""

    apartment: str
    unit: str
    version: str
    settings: RolloutSettings
    building: str = ""
    """Empty: the unit's building, else the only building there is."""
    sticky: bool | None = None
    """Sticky canary; None: the unit's recorded default (``UnitRecord.sticky``)."""
    keep_replicas: bool = False
    """The caller named no count: as many instances as the unit runs now (``settings``
    keeps 1, right for a first deploy or a stopped unit)."""


@dataclass(frozen=True)
class DeployFacts:
    """What the cluster knows that a Deploy decision needs."""

    unit: UnitRecord
    versions: Mapping[str, VersionRecord]
    """Published versions of the unit."""
    instances: Sequence[InstanceRecord]
    """Instances of the unit now."""
    active: RolloutRecord | None
    running: Mapping[str, frozenset[str]]
    """``apartment/unit`` -> versions that have a running instance."""
    rooms: Sequence[HostRoom]
    """Placeable hosts of the building, as placement sees them."""
    port_range: tuple[int, int] = (20000, 29999)
    routes: Sequence[RouteRecord] = ()
    """The units' routes (their entry points), of every building."""


def other_slot(slot: str) -> str:
    return "blue" if slot == "green" else "green"


def choose_building(requested: str, unit: UnitRecord, buildings: Iterable[str]) -> str:
    """The building named, else the unit's, else the only one the hosts are in."""
    if requested or unit.building:
        return requested or unit.building
    found = sorted(set(buildings))
    if len(found) == 1:
        return found[0]
    raise InvalidArgument("building is required: hosts are in "
                          + (", ".join(found) if found else "no building yet"),
                          field="building")


def check_dependencies(
    apartment: str, unit: str, version: VersionRecord, running: Mapping[str, frozenset[str]]
) -> None:
    """FailedPrecondition naming every dependency that is not running inside its range."""
    problems = []
    for text in version.tag.spec.dependencies:
        dep = parse_dependency(text, apartment)
        versions = sorted(running.get(dep.unit, frozenset()))
        if not any(satisfies(v, dep.range) for v in versions):
            have = f"runs {', '.join(versions)}" if versions else "is not running"
            problems.append(f"{dep} ({dep.unit} {have})")
    if problems:
        raise FailedPrecondition(
            f"{apartment}/{unit} {version.version} needs dependencies that are not running "
            f"at a satisfying version: {'; '.join(problems)}",
            unit=unit, version=version.version, dependencies=problems)


def check_entry_point(apartment: str, unit: str, version: VersionRecord, building: str,
                      routes: Iterable[RouteRecord]) -> None:
    """FailedPrecondition when ``version`` would serve on the entry point (service port) of a
    unit of another apartment in ``building``; the message does not name that unit."""
    port = version.tag.spec.service_port
    if port <= 0:
        return
    for route in routes:
        if (route.building == building and route.service_port == port
                and route.apartment != apartment):
            raise FailedPrecondition(
                f"{apartment}/{unit} {version.version} serves on service port {port}, the "
                f"entry point of a unit of another apartment in building {building}; "
                "publish a version with another service port", unit=unit,
                version=version.version)


def admit(
    rollout_id: str,
    apartment: str,
    unit: str,
    version: str,
    building: str,
    settings: RolloutSettings,
    facts: DeployFacts,
    now: float,
) -> RolloutRecord:
    """The pending rollout record for this Deploy, or the error that refuses it."""
    name = f"{apartment}/{unit}"
    found = facts.versions.get(version)
    if found is None:
        published = ", ".join(sorted(facts.versions)) or "none"
        raise FailedPrecondition(f"{name} {version} is not published (published: {published})",
                                 unit=unit, version=version)
    stable = facts.unit.stable_version
    if facts.active is not None:
        raise already_active(facts.active)
    if stable == version:
        raise FailedPrecondition(f"{name} already runs {version}", unit=unit, version=version)
    check_dependencies(apartment, unit, found, facts.running)
    check_entry_point(apartment, unit, found, building, facts.routes)
    old = [i for i in facts.instances if stable and i.version == stable]
    # a first deploy starts in blue; a rollout goes to the slot the stable version is not in
    new_slot = other_slot(old[0].slot) if old else ("green" if stable else "blue")
    ids = tuple(f"admission-{index}" for index in range(settings.replicas))
    place(PlacementRequest(apartment, unit, new_slot, found.tag.spec.resources, ids, building),
          facts.rooms, facts.port_range)
    settings = replace(settings, state_mode=found.tag.spec.state_mode)
    if not stable:
        settings = replace(settings, strategy=Strategy.INITIAL)
    return new_rollout(rollout_id, apartment, unit, building, stable, version, settings, now,
                       new_slot=new_slot, old_instances=sorted(i.instance_id for i in old))
