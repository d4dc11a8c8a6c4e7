"""The leader's hands on the fleet: place, start, stop and route instances.

This is the internal API the rollout engine builds on:

- ``place(apartment, unit, version, slot, replicas, building)`` decides hosts and ports
  (coordinator/placement.py) and records instances and allocations in one fenced
  compare-and-swap transaction; nothing is started yet.
- ``start_instances(records)`` sends StartInstance to each record's host.
- ``stop_instance(instance_id)`` removes the instance and its allocation (one transaction),
  takes it out of every host's route, then sends StopInstance (drain first).
- ``set_split(apartment, unit, {version: percent})`` records the traffic split and
  ``set_route(apartment, unit)`` sends the unit's whole data plane (SetUnitRoute) to every
  connected host of the building at once; ``set_weights`` sends bare SetWeights.
- ``windows(apartment, unit, version, since)`` returns the request-metrics windows agents
  reported, for judging canary steps.
- ``run_check(instance_id, argv, timeout_s)`` sends RunCheck to the instance's host and
  waits for its CommandResult (exit code, output), which ``command_results`` hands over
  from the host's next report.

Every write carries the leader's fence, so a deposed leader cannot change anything.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.clock import Clock
from common.errors import Conflict, InvalidArgument, NotFound, Unavailable
from common.resources import HostLedger, Resources
from common.stream_commands import Command, RunCheck, SetRoute, SetWeights, StopInstance
from common.stream_messages import CommandResult, MetricsWindow, ObservedInstance
from coordinator.agent_messages import start_command
from coordinator.events import EventLog
from coordinator.fleet import Fleet
from coordinator.keys import KeyLayout
from coordinator.leadership import Leadership
from coordinator.liveness import HostHealth
from coordinator.placement import HostRoom, PlacementRequest, place
from coordinator.records import (
    Allocation,
    HostRecord,
    InstanceRecord,
    RouteRecord,
    encode,
    encode_allocations,
)
from coordinator.routes import plan_route
from coordinator.state import ClusterState
from coordinator.store import Store, Txn
from coordinator.view import ClusterView

__all__ = ["ControlSettings", "FleetControl"]

log = logging.getLogger(__name__)

UnitKey = tuple[str, str]
CAS_ATTEMPTS = 4


@dataclass(frozen=True)
class ControlSettings:
    port_range: tuple[int, int] = (20000, 29999)
    stop_grace_s: float = 30.0
    window_retention: int = 20_000
    """Metrics windows kept in memory for the rollout engine (oldest dropped first)."""
    check_answer_margin_s: float = 10.0
    """How long past a RunCheck's own timeout its host's answer is waited for."""


class FleetControl:
    def __init__(
        self,
        store: Store,
        layout: KeyLayout,
        view: ClusterView,
        state: ClusterState,
        fleet: Fleet,
        leadership: Leadership,
        events: EventLog,
        clock: Clock,
        settings: ControlSettings | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.view = view
        self.state = state
        self.fleet = fleet
        self.leadership = leadership
        self.events = events
        self.clock = clock
        self.settings = settings or ControlSettings()
        self._dirty_routes: set[UnitKey] = set()
        self._metrics: deque[MetricsWindow] = deque(maxlen=self.settings.window_retention)
        self._start_sent: dict[str, float] = {}
        self._allocated_cache: dict[str, tuple[int, Resources]] = {}
        self._awaited: dict[str, asyncio.Future[CommandResult]] = {}
        """RunCheck command id -> its result, once the host reports it."""

    @property
    def max_replicas(self) -> int:
        """Most instances one placement may record in one transaction: each takes an
        instance put and compare plus its host's allocation put and compare; ten ops are
        left for the unit, route and rollout records and the fence."""
        return max(1, (self.store.max_txn_ops - 10) // 4)

    # -- what is known ---------------------------------------------------------------------

    def known_state(self, instance_id: str) -> ObservedInstance | None:
        """The freshest observation: this leader's memory, else the last persisted status."""
        seen = self.fleet.observed.get(instance_id)
        if seen is not None:
            return seen
        status = self.state.statuses.get(instance_id)
        record = self.state.instances.get(instance_id)
        if status is None or record is None:
            return None
        r = record.value
        return ObservedInstance(
            instance_id=instance_id, host_id=status.host_id, apartment=r.apartment,
            unit=r.unit, version=r.version, slot=r.slot, state=status.state,
            health_score=1.0 if status.healthy else 0.0, port=r.port,
            restarts=status.restarts, reason=status.reason,
        )

    def lost_hosts(self) -> frozenset[str]:
        return self.state.lost_host_ids()

    def placeable_hosts(self, building: str) -> list[HostRecord]:
        """Hosts of ``building`` that are connected to this leader and alive."""
        return [
            host
            for host in self.state.hosts_in(building)
            if host.status != "lost"
            and host.host_id in self.fleet.sessions
            and self.fleet.health.get(host.host_id, HostHealth.ALIVE) == HostHealth.ALIVE
        ]

    def _rooms(self, building: str) -> list[HostRoom]:
        rooms = []
        for host in self.placeable_hosts(building):
            allocations, _ = self.state.allocation_of(host.host_id)
            slots: dict[tuple[str, str, str], int] = {}
            for inst in self.state.instances_on(host.host_id):
                key = (inst.apartment, inst.unit, inst.slot)
                slots[key] = slots.get(key, 0) + 1
            rooms.append(
                HostRoom(
                    host_id=host.host_id,
                    capacity=host.capacity,
                    allocated=self._allocated(host.host_id),
                    ports=frozenset(a.port for a in allocations.values()),
                    slots=slots,
                )
            )
        return rooms

    def _allocated(self, host_id: str) -> Resources:
        """What the host's instances hold, summed once per revision of its ledger."""
        allocations, revision = self.state.allocation_of(host_id)
        cached = self._allocated_cache.get(host_id)
        if cached is None or cached[0] != revision:
            ledger = HostLedger(host_id, Resources(),
                                {i: a.resources for i, a in allocations.items()})
            cached = (revision, ledger.allocated)
            self._allocated_cache[host_id] = cached
        return cached[1]

    # -- placement -------------------------------------------------------------------------

    async def place(
        self,
        apartment: str,
        unit: str,
        version: str,
        slot: str,
        replicas: int,
        building: str,
        replaces: InstanceRecord | None = None,
        extra: Txn | None = None,
    ) -> list[InstanceRecord]:
        """Decide and record ``replicas`` new instances (not started). See the module doc.

        ``replaces``: an instance (on a lost host) removed in the same transaction.
        ``extra``: more changes (unit, route, rollout records) committed together.
        """
        if replicas < 1:
            raise InvalidArgument(f"replicas must be >= 1, got {replicas}", replicas=replicas)
        found = self.state.versions.get((apartment, unit), {}).get(version)
        if found is None:
            raise NotFound(f"{apartment}/{unit} has no published version {version}",
                           unit=unit, version=version)
        resources = found.tag.spec.resources
        lost = self.lost_hosts()
        for attempt in range(CAS_ATTEMPTS):
            ids = tuple(f"{unit}-{slot}-{secrets.token_hex(4)}" for _ in range(replicas))
            decided = place(
                PlacementRequest(apartment, unit, slot, resources, ids, building, lost),
                self._rooms(building),
                self.settings.port_range,
            )
            now = self.clock.now()
            records = [
                InstanceRecord(p.instance_id, apartment, unit, version, slot, p.host_id, p.port,
                               resources, now, replaces.instance_id if replaces else "")
                for p in decided
            ]
            txn = Txn()
            by_host: dict[str, list[InstanceRecord]] = {}
            for record in records:
                by_host.setdefault(record.host_id, []).append(record)
                txn.require(self.layout.instance(record.instance_id), 0)
                txn.put(self.layout.instance(record.instance_id), encode(record))
            for host_id, placed in by_host.items():
                allocations, revision = self.state.allocation_of(host_id)
                for record in placed:
                    allocations[record.instance_id] = Allocation(record.resources, record.port)
                txn.require(self.layout.alloc(host_id), revision)
                txn.put(self.layout.alloc(host_id), encode_allocations(allocations))
            if replaces is not None:
                txn.extend(self._removal(replaces))
            if extra is not None:
                txn.extend(extra)
            try:
                revision = await self.store.commit(txn, self.leadership.fence)
            except Conflict as exc:
                log.info("placement of %s/%s lost a race (attempt %d); deciding again",
                         apartment, unit, attempt + 1)
                await self.catch_up(exc)
                continue
            await self.view.wait_for(revision)
            await self.events.append([
                self.events.make(
                    "instance.placed",
                    f"{record.instance_id} placed on {record.host_id}:{record.port}",
                    apartment=apartment, unit=unit, version=version,
                    host_id=record.host_id, instance_id=record.instance_id,
                    replaces=record.replaces,
                )
                for record in records
            ])
            self.mark_route_dirty(apartment, unit)
            return records
        raise Conflict(f"placing {apartment}/{unit} kept conflicting with other changes; retry",
                       unit=unit)

    async def catch_up(self, conflict: Conflict) -> None:
        """After a lost compare-and-swap: wait until the cache has what made it fail."""
        revision = conflict.context.get("revision")
        if isinstance(revision, int) and revision:
            await self.view.wait_for(revision, timeout=30)
        else:
            await asyncio.sleep(0.1)

    def _removal(self, record: InstanceRecord) -> Txn:
        """Remove an instance, its status and its allocation (guarded by revisions)."""
        txn = Txn()
        current = self.state.instances.get(record.instance_id)
        txn.require(self.layout.instance(record.instance_id),
                    current.mod_revision if current else 0)
        if current is not None:
            txn.delete(self.layout.instance(record.instance_id))
        txn.delete(self.layout.status(record.instance_id))
        allocations, revision = self.state.allocation_of(record.host_id)
        if record.instance_id in allocations:
            del allocations[record.instance_id]
            txn.require(self.layout.alloc(record.host_id), revision)
            if allocations:
                txn.put(self.layout.alloc(record.host_id), encode_allocations(allocations))
            else:
                txn.delete(self.layout.alloc(record.host_id))
        return txn

    # -- starting and stopping -------------------------------------------------------------

    async def start_instances(self, records: Sequence[InstanceRecord]) -> int:
        """Send StartInstance for each record; returns how many went to a connected host."""
        self.leadership.fence  # noqa: B018  # raises NotLeader on a follower
        sent = 0
        for record in records:
            version = self.state.versions.get(record.unit_key, {}).get(record.version)
            if version is None:
                raise NotFound(f"{record.apartment}/{record.unit} {record.version} is gone",
                               unit=record.unit, version=record.version)
            sent += self.fleet.send(record.host_id, start_command(record, version))
            self._start_sent[record.instance_id] = self.clock.monotonic()
            self.mark_route_dirty(record.apartment, record.unit)
        return sent

    async def converge(self, resend_after: float) -> int:
        """Send StartInstance again for desired instances their connected host has not
        reported within ``resend_after`` seconds of the last send (a deploy interrupted
        between its commit and its commands, a lost command); returns how many."""
        now = self.clock.monotonic()
        resent = []
        for host_id in list(self.fleet.sessions):
            missing = self.state.instance_ids_on(host_id) - self.fleet.observed_ids_on(host_id)
            for iid in sorted(missing):
                if now - self._start_sent.setdefault(iid, now) >= resend_after:
                    resent.append(self.state.instances[iid].value)
        for iid in [i for i in self._start_sent if i in self.fleet.observed
                    or i not in self.state.instances]:
            del self._start_sent[iid]
        if resent:
            log.warning("%d desired instance(s) not reported by their host; starting them "
                        "again", len(resent))
            await self.start_instances(resent)
        return len(resent)

    async def stop_instance(
        self, instance_id: str, drain: bool = True, grace_s: float | None = None
    ) -> None:
        """Remove the instance from etcd and every route, then tell its host to stop it."""
        found = self.state.instances.get(instance_id)
        if found is None:
            raise NotFound(f"instance {instance_id} does not exist", instance=instance_id)
        record = found.value
        for _ in range(CAS_ATTEMPTS):
            try:
                revision = await self.store.commit(self._removal(record), self.leadership.fence)
                break
            except Conflict as exc:
                await self.catch_up(exc)
        else:
            raise Conflict(f"stopping {instance_id} kept conflicting; retry", instance=instance_id)
        await self.view.wait_for(revision)
        self.fleet.unobserve(instance_id)
        await self.set_route(record.apartment, record.unit)
        grace = self.settings.stop_grace_s if grace_s is None else grace_s
        self.fleet.send(record.host_id, StopInstance(instance_id, grace, drain))

    # -- routing ---------------------------------------------------------------------------

    async def set_split(
        self,
        apartment: str,
        unit: str,
        split: Mapping[str, float],
        building: str,
        service_port: int,
        health_path: str,
    ) -> RouteRecord:
        """Record the unit's traffic split (compare-and-swap) and send the route everywhere."""
        if abs(sum(split.values()) - 100) > 1e-6:
            raise InvalidArgument(f"traffic split must add up to 100, got {dict(split)}")
        route = RouteRecord(apartment, unit, building, service_port, health_path, dict(split),
                            self.clock.now())
        current = self.state.routes.get((apartment, unit))
        txn = Txn().require(self.layout.route(apartment, unit),
                            current.mod_revision if current else 0)
        txn.put(self.layout.route(apartment, unit), encode(route))
        revision = await self.store.commit(txn, self.leadership.fence)
        await self.view.wait_for(revision)
        await self.set_route(apartment, unit)
        return route

    def route_command(self, apartment: str, unit: str) -> SetRoute | None:
        route = self.state.routes.get((apartment, unit))
        if route is None:
            return None
        instances = self.state.instances_of(apartment, unit)
        observed = {}
        for inst in instances:
            seen = self.known_state(inst.instance_id)
            if seen is not None:
                observed[inst.instance_id] = seen
        hosts = {i.host_id: self.state.hosts[i.host_id].value
                 for i in instances if i.host_id in self.state.hosts}
        return plan_route(route.value, instances, observed, hosts, self.state.lost_host_ids())

    async def set_route(self, apartment: str, unit: str) -> int:
        """SetUnitRoute to every connected host of the unit's building (one command id)."""
        self.leadership.fence  # noqa: B018
        command = self.route_command(apartment, unit)
        self._dirty_routes.discard((apartment, unit))
        if command is None:
            return 0
        route = self.state.routes[(apartment, unit)].value
        hosts = [h.host_id for h in self.state.hosts_in(route.building)]
        return self.fleet.broadcast(hosts, command)

    async def set_weights(self, apartment: str, unit: str, weights: Mapping[str, int]) -> int:
        self.leadership.fence  # noqa: B018
        route = self.state.routes.get((apartment, unit))
        if route is None:
            raise NotFound(f"{apartment}/{unit} has no route", unit=unit)
        hosts = [h.host_id for h in self.state.hosts_in(route.value.building)]
        return self.fleet.broadcast(hosts, SetWeights(apartment, unit, dict(weights)))

    def routes_for_building(self, building: str) -> list[SetRoute]:
        commands = []
        for (apartment, unit), route in sorted(self.state.routes.items()):
            if route.value.building == building:
                command = self.route_command(apartment, unit)
                if command is not None:
                    commands.append(command)
        return commands

    def mark_route_dirty(self, apartment: str, unit: str) -> None:
        self._dirty_routes.add((apartment, unit))

    async def flush_routes(self) -> int:
        """Send the routes of units whose instances changed since the last flush."""
        dirty, self._dirty_routes = self._dirty_routes, set()
        sent = 0
        for apartment, unit in sorted(dirty):
            sent += await self.set_route(apartment, unit)
        return sent

    # -- metrics ---------------------------------------------------------------------------

    def record_windows(self, windows: Sequence[MetricsWindow]) -> None:
        self._metrics.extend(windows)

    def windows(
        self, apartment: str, unit: str, version: str = "", since: float = 0.0
    ) -> list[MetricsWindow]:
        return [
            w for w in self._metrics
            if w.apartment == apartment and w.unit == unit
            and (not version or w.version == version) and w.end > since
        ]

    # -- commands in containers ------------------------------------------------------------

    async def run_check(self, instance_id: str, argv: Sequence[str],
                        timeout_s: float) -> CommandResult:
        """Run ``argv`` in the instance's container (its host's agent runs ``docker exec``)
        and return the host's result: ``ok`` with the exit code and output, or not ok with
        why (timed out, not running there, an agent that has no RunCheck).

        Raises NotFound for an unknown instance and Unavailable when its host is not
        connected, disconnects, or does not answer within ``timeout_s`` plus a margin."""
        found = self.state.instances.get(instance_id)
        if found is None:
            raise NotFound(f"instance {instance_id} does not exist", instance=instance_id)
        host_id = found.value.host_id
        session = self.fleet.sessions.get(host_id)
        if session is None:
            raise Unavailable(f"host {host_id} of {instance_id} is not connected",
                              host=host_id, instance=instance_id)
        command_id = f"check:{secrets.token_hex(8)}"
        answer: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._awaited[command_id] = answer
        closed = asyncio.ensure_future(session.closed.wait())
        try:
            session.send(Command(command_id, RunCheck(instance_id, tuple(argv),
                                                              timeout_s)))
            self.fleet.commands_sent += 1
            limit = timeout_s + self.settings.check_answer_margin_s
            waiters: set[asyncio.Future[Any]] = {answer, closed}
            done, _ = await asyncio.wait(waiters, timeout=limit,
                                         return_when=asyncio.FIRST_COMPLETED)
            if answer in done:
                return answer.result()
            if closed in done:
                raise Unavailable(f"host {host_id} disconnected before answering the check "
                                  f"of {instance_id}", host=host_id, instance=instance_id)
            raise Unavailable(f"host {host_id} did not answer the check of {instance_id} "
                              f"within {limit:g}s", host=host_id, instance=instance_id)
        finally:
            closed.cancel()
            self._awaited.pop(command_id, None)

    def command_results(self, results: Sequence[CommandResult]) -> None:
        """Hand the results of awaited commands (RunCheck) to whoever waits for them."""
        for result in results:
            answer = self._awaited.get(result.command_id)
            if answer is not None and not answer.done():
                answer.set_result(result)
