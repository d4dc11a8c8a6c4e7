"""Deploy: the first deployment of a unit, and the hook where rollouts plug in.

For a unit with nothing running, deploy places ``replicas`` instances of the version in
slot blue across the building, and records the instances, their allocations, the unit
(running, stable version), its route (100 % to the version) and a rollout record in ONE
transaction; then it starts the instances and sends the route to every host. A unit that
already runs a version is handed to the rollout engine (blue-green or canary) when one is
installed (``Deployer.rollouts``), and refused otherwise.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from common.clock import Clock
from common.dependencies import parse_dependency
from common.errors import FailedPrecondition, InvalidArgument
from common.semantic_versions import satisfies
from coordinator.events import EventLog
from coordinator.keys import KeyLayout
from coordinator.leadership import Leadership
from coordinator.records import InstanceRecord, RolloutRecord, RouteRecord, UnitRecord, encode
from coordinator.registry import Registry
from coordinator.state import ClusterState
from coordinator.store import Txn

__all__ = ["DeployRequest", "Deployer", "RolloutEngine"]



@dataclass(frozen=True)
class DeployRequest:
    apartment: str
    unit: str
    version: str
    building: str = ""
    replicas: int = 1
    strategy: str = "blue_green"


class RolloutEngine(Protocol):
    """Moves a running unit to another version (the next issue's rollouts module)."""

    async def start(self, request: DeployRequest, unit: UnitRecord) -> RolloutRecord: ...


class FirstPlacement(Protocol):
    """Recording the first instances (coordinator/placement_writer.py)."""

    @property
    def max_replicas(self) -> int: ...

    async def place(self, apartment: str, unit: str, version: str, slot: str, replicas: int,
                    building: str, replaces: InstanceRecord | None = None,
                    extra: Txn | None = None) -> list[InstanceRecord]: ...


class FirstCommands(Protocol):
    """Starting and routing the first instances (coordinator/dispatch.py)."""

    async def start_instances(self, records: Sequence[InstanceRecord]) -> int: ...

    async def set_route(self, apartment: str, unit: str) -> int: ...


class Deployer:
    def __init__(self, *, state: ClusterState, layout: KeyLayout, placement: FirstPlacement,
                 commands: FirstCommands, events: EventLog, leadership: Leadership,
                 clock: Clock, registry: Registry) -> None:
        self.state = state
        self.layout = layout
        self.placement = placement
        self.commands = commands
        self.events = events
        self.leadership = leadership
        self.clock = clock
        self.registry = registry
        self.rollouts: RolloutEngine | None = None

    def _building(self, request: DeployRequest, unit: UnitRecord) -> str:
        if request.building:
            return request.building
        if unit.building:
            return unit.building
        buildings = {v.value.building for v in self.state.hosts.values()}
        if len(buildings) == 1:
            return buildings.pop()
        raise InvalidArgument(
            "building is required: hosts are in "
            + (", ".join(sorted(buildings)) if buildings else "no building yet"),
            field="building",
        )

    def _check_dependencies(self, request: DeployRequest) -> None:
        record = self.registry.version(request.apartment, request.unit, request.version)
        for text in record.tag.spec.dependencies:
            dep = parse_dependency(text, request.apartment)
            a, u = dep.unit.split("/")
            running = self.state.units.get((a, u))
            stable = running.value.stable_version if running else ""
            if not stable:
                raise FailedPrecondition(
                    f"dependency {dep} of {request.apartment}/{request.unit} is not running; "
                    f"deploy {dep.unit} first", dependency=str(dep))
            if not satisfies(stable, dep.range):
                raise FailedPrecondition(
                    f"dependency {dep} is not satisfied: {dep.unit} runs {stable}",
                    dependency=str(dep), running=stable)

    async def deploy(self, request: DeployRequest) -> RolloutRecord:
        self.leadership.fence  # noqa: B018
        most = self.placement.max_replicas
        if not 1 <= request.replicas <= most:
            raise InvalidArgument(f"replicas must be 1..{most}, got {request.replicas} (one "
                                  "deployment is one etcd transaction; see etcd_max_txn_ops)",
                                  field="replicas")
        version = self.registry.version(request.apartment, request.unit, request.version)
        unit = self.registry.unit(request.apartment, request.unit)
        if unit.stable_version or self.state.instances_of(request.apartment, request.unit):
            if unit.stable_version == request.version:
                raise FailedPrecondition(
                    f"{request.apartment}/{request.unit} already runs {request.version}",
                    version=request.version)
            if self.rollouts is None:
                raise FailedPrecondition(
                    f"{request.apartment}/{request.unit} already runs "
                    f"{unit.stable_version or 'instances'}; moving it to {request.version} "
                    "needs a rollout, which this coordinator does not offer yet",
                    unit=request.unit)
            return await self.rollouts.start(request, unit)
        self._check_dependencies(request)
        building = self._building(request, unit)
        now = self.clock.now()
        rollout = RolloutRecord(
            rollout_id=f"r{int(now)}-{secrets.token_hex(3)}", apartment=request.apartment,
            unit=request.unit, from_version="", to_version=request.version, building=building,
            strategy=request.strategy, phase="promoted", replicas=request.replicas,
            started_at=now, ended_at=now, reason="first deployment: all traffic to it",
        )
        key = (request.apartment, request.unit)
        current_unit = self.state.units.get(key)
        current_route = self.state.routes.get(key)
        new_unit = replace(unit, state="running", stable_version=request.version,
                           building=building, replicas=request.replicas, updated_at=now)
        spec = version.tag.spec
        route = RouteRecord(request.apartment, request.unit, building, spec.service_port,
                            spec.health_check.path, {request.version: 100.0}, now)
        layout = self.layout
        extra = (
            Txn()
            .require(layout.unit(*key), current_unit.mod_revision if current_unit else 0)
            .put(layout.unit(*key), encode(new_unit))
            .require(layout.route(*key), current_route.mod_revision if current_route else 0)
            .put(layout.route(*key), encode(route))
            .require(layout.rollout(*key, rollout.rollout_id), 0)
            .put(layout.rollout(*key, rollout.rollout_id), encode(rollout))
        )
        records = await self.placement.place(request.apartment, request.unit, request.version,
                                             "blue", request.replicas, building, extra=extra)
        await self.commands.start_instances(records)
        await self.commands.set_route(request.apartment, request.unit)
        await self.events.emit(
            "rollout.promoted",
            f"{request.apartment}/{request.unit} {request.version} deployed with "
            f"{len(records)} instance(s) on {len({r.host_id for r in records})} host(s)",
            apartment=request.apartment, unit=request.unit, version=request.version,
            rollout_id=rollout.rollout_id,
        )
        return rollout
