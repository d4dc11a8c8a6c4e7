"""The rollout service behind the Admin API: deploy, control, rollback, read and watch.

Writes need the lead (the leader's fence guards every one); reads come from the watch-fed
cache, so followers answer them. While this coordinator leads, ``lead()`` resumes every
active rollout (from its last committed step) and runs one RolloutRunner task per rollout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from common.clock import Clock
from common.dependencies import parse_dependency
from common.errors import FailedPrecondition, InsufficientResources, LandlordError, NotFound
from common.lifecycle import DeployState
from coordinator.errors import NotLeader
from coordinator.fleet.placement import HostRoom
from coordinator.registry import Registry
from coordinator.rollouts.admission import (
    DeployFacts,
    DeployRequest,
    admit,
    check_entry_point,
    choose_building,
    other_slot,
)
from coordinator.rollouts.controls import new_rollout, request_control, retry_rollout
from coordinator.rollouts.etcd_records import EtcdRolloutRecords, previous_stable
from coordinator.rollouts.fleet_adapter import CoordinatorFleet
from coordinator.rollouts.pausing import refuse_paused
from coordinator.rollouts.record import RETRY, Control, RolloutRecord, decode_record
from coordinator.rollouts.runner import RolloutRunner, RunnerSettings
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.rollouts.status import RolloutStatus, rollout_status
from coordinator.state.cluster_state import ClusterState
from coordinator.state.leadership import Leadership
from coordinator.state.records import RouteRecord, UnitRecord

__all__ = ["RolloutService"]

log = logging.getLogger(__name__)


class RolloutService:
    def __init__(self, *, records: EtcdRolloutRecords, fleet: CoordinatorFleet,
                 registry: Registry, state: ClusterState, leadership: Leadership,
                 clock: Clock, runner_settings: RunnerSettings | None = None) -> None:
        self.records = records
        self.fleet = fleet
        self.registry = registry
        self.state = state
        self.leadership = leadership
        self.clock = clock
        self.runner_settings = runner_settings or RunnerSettings()
        self.runners: dict[str, tuple[asyncio.Task[RolloutRecord], RolloutRunner]] = {}
        self.refused: Callable[[str], None] = lambda resource: None
        """Told the short resource of every deploy admission refused for want of room."""

    # -- reads -----------------------------------------------------------------------------

    def history(self, apartment: str, unit: str, limit: int = 10) -> list[RolloutRecord]:
        return [r for r, _ in self.records.history(apartment, unit)][: limit or 10]

    def get(self, apartment: str, unit: str, rollout_id: str = "") -> RolloutRecord:
        history = self.history(apartment, unit, 0)
        for record in history:
            if record.rollout_id == rollout_id or (not rollout_id and record.active):
                return record
        if not rollout_id and history:
            return history[0]
        raise NotFound(f"no rollout {rollout_id or ''} of {apartment}/{unit}".replace("  ", " "),
                       unit=unit, rollout=rollout_id)

    def status(self, record: RolloutRecord) -> RolloutStatus:
        """The read model of ``record``, with the request windows this coordinator holds
        (the leader's agents report them; a follower shows the recorded figures)."""
        windows = self.fleet.unit_windows(record.apartment, record.unit) if record.active else []
        return rollout_status(record, windows, self.clock.now())

    async def watch(self, apartment: str, unit: str, rollout_id: str = "",
                    refresh: float = 2.0) -> AsyncIterator[RolloutStatus]:
        """The rollout's status now and after every change of its record (each phase, however
        short: the watch-fed cache tells of every change in order), until it has ended;
        while it is measured live, also every ``refresh`` seconds (new figures)."""
        record = self.get(apartment, unit, rollout_id)
        changes: asyncio.Queue[bytes | None] = asyncio.Queue()

        def changed(key: tuple[str, str], changed_id: str, value: bytes | None) -> None:
            if key == (apartment, unit) and changed_id == record.rollout_id:
                changes.put_nowait(value)

        stop = self.state.watch_rollouts(changed)
        try:
            current: RolloutRecord | None = record  # no await since it was read: none missed
            last: RolloutRecord | None = None
            while current is not None:
                if current != last or current.active:
                    status = self.status(current)  # reads the windows: not on every change
                    if current != last or status.measured_live:
                        yield status
                    last = current
                if current.terminal:
                    return
                try:
                    value = await asyncio.wait_for(changes.get(), timeout=refresh)
                except TimeoutError:
                    current = last  # no change: new figures only
                    continue
                try:
                    current = None if value is None else decode_record(value)
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("watch of %s: skipping an unreadable record: %s",
                              record.rollout_id, exc)
                    current = last
        finally:
            stop()

    # -- writes ----------------------------------------------------------------------------

    async def deploy(self, req: DeployRequest) -> RolloutRecord:
        """A rollout of ``req.version``: a unit's first deploy too (no stable version)."""
        self.leadership.fence  # noqa: B018  # raises NotLeader on a follower
        unit = self.registry.unit(req.apartment, req.unit)
        refuse_paused(f"{req.apartment}/{req.unit}",
                      self.state.instances_of(req.apartment, req.unit), "deployed")
        settings = replace(req.settings,
                           sticky=unit.sticky if req.sticky is None else req.sticky)
        if req.keep_replicas and unit.replicas > 0:
            settings = replace(settings, replicas=unit.replicas)
        building = choose_building(req.building, unit,
                                   (h.value.building for h in self.state.hosts.values()))
        facts = self._facts(req.apartment, req.unit, building)
        try:
            record = admit(self._new_id(), req.apartment, req.unit, req.version, building,
                           settings, facts, self.clock.now())
        except InsufficientResources as exc:
            self.refused(str(exc.context.get("resource", "")))
            raise
        # The new instances are placed in the transaction that creates the record: of two
        # Deploys racing for the same room, one is refused here (RESOURCE_EXHAUSTED) rather
        # than failing later; the rollout starts them when it reaches deploying.
        # The same transaction claims the unit's active-rollout key (one_active.py): of
        # Deploys racing for the unit, one commits; the others, decided again from the
        # fresher cache, are refused naming it (FAILED_PRECONDITION).
        # Past etcd's --max-txn-ops, the record and the first instances go in one transaction
        # and the rest in more: when a later one fails, the rollout exists and its runner
        # places what is missing (a new leader's does the same after a change mid-way).
        try:
            await self.fleet.place_new(record, extra=lambda: self.records.creation(record))
        except NotLeader:
            raise
        except LandlordError as exc:
            if not self._created(record):
                raise
            log.warning("rollout %s: placing its instances stopped part-way (%s); the "
                        "rollout places the rest", record.rollout_id, exc)
        record, revision = await self.records.load(record)
        self._run(record, revision, resumed=False)
        return record

    async def control_rollout(self, apartment: str, unit: str,
                              control: Control | str) -> RolloutRecord:
        """promote, abort, pause, resume (queued in the record) or retry (a new attempt)."""
        self.leadership.fence  # noqa: B018
        if control == RETRY:
            return await self._retry(apartment, unit)
        assert isinstance(control, Control)
        return await self._queue(apartment, unit, control)

    async def rollback(self, apartment: str, unit: str, to_version: str = "") -> RolloutRecord:
        """Abort the active rollout, or take the fast path back to a kept version."""
        self.leadership.fence  # noqa: B018
        if self.records.active(apartment, unit) is not None:
            return await self._queue(apartment, unit, Control.ABORT)
        current = self.registry.unit(apartment, unit)
        _refuse_stopped(current, "rolled back")
        refuse_paused(f"{apartment}/{unit}", self.state.instances_of(apartment, unit),
                      "rolled back")
        stable = current.stable_version
        target = to_version or self._previous_stable(apartment, unit, stable)
        if target == stable:
            raise FailedPrecondition(f"{apartment}/{unit} already runs {target}")
        version = self.registry.version(apartment, unit, target)
        self._check_entry_point(apartment, unit, version.version, current.building)
        image = version.tag.spec.run_image  # what hosts hold: NAME@DIGEST once resolved
        if not self.fleet.image_kept(current.building, image):
            raise FailedPrecondition(
                f"the image of {apartment}/{unit} {target} ({image}) is no longer kept on any "
                f"host of building {current.building}; deploy {target} instead",
                unit=unit, version=target)
        instances = self.state.instances_of(apartment, unit)
        old = sorted(i.instance_id for i in instances if i.version == stable)
        slots = [i.slot for i in instances if i.version == stable]
        settings = RolloutSettings(strategy=Strategy.ROLLBACK, replicas=current.replicas or 1)
        record = new_rollout(self._new_id(), apartment, unit, current.building, stable, target,
                             settings, self.clock.now(),
                             new_slot=other_slot(slots[0]) if slots else "green",
                             old_instances=old)
        revision = await self.records.create(record)
        self._run(record, revision, resumed=False)
        return record

    def _previous_stable(self, apartment: str, unit: str, stable: str) -> str:
        history = (record for record, _ in self.records.history(apartment, unit))
        found = previous_stable(history, stable)
        if not found:
            raise FailedPrecondition(f"{apartment}/{unit} has no previous stable version to "
                                     "roll back to", unit=unit)
        return found

    async def _queue(self, apartment: str, unit: str, control: Control) -> RolloutRecord:
        async def attempt() -> RolloutRecord:
            found = self.records.active(apartment, unit)
            if found is None:
                raise FailedPrecondition(f"{apartment}/{unit} has no active rollout to "
                                         f"{control.value}", unit=unit)
            record, revision = found
            queued = request_control(record, control, self.clock.now())
            if queued is record:
                return record
            await self.records.save(queued, revision, wait=True)
            running = self.runners.get(record.rollout_id)
            if running is not None:
                running[1].wake()
            return queued

        return await self.records.retry(attempt, f"queuing {control.value} on the rollout "
                                        f"of {apartment}/{unit}", unit=unit)

    async def _retry(self, apartment: str, unit: str) -> RolloutRecord:
        if self.records.active(apartment, unit) is not None:
            raise FailedPrecondition(f"{apartment}/{unit} has an active rollout; only an "
                                     "ended one can be retried", unit=unit)
        history = self.records.history(apartment, unit)
        if not history:
            raise NotFound(f"{apartment}/{unit} has no rollout to retry", unit=unit)
        last = history[0][0]
        unit_record = self.registry.unit(apartment, unit)
        _refuse_stopped(unit_record, "retried")
        self._check_entry_point(apartment, unit, last.to_version, last.building)
        instances = self.state.instances_of(apartment, unit)
        old = [i for i in instances if i.version == unit_record.stable_version]
        record = retry_rollout(last, self._new_id(), self.clock.now(),
                               unit_record.stable_version,
                               old_instances=sorted(i.instance_id for i in old),
                               new_slot=other_slot(old[0].slot) if old else "")
        revision = await self.records.create(record)
        self._run(record, revision, resumed=False)
        return record

    # -- leading ---------------------------------------------------------------------------

    async def lead(self) -> None:
        """Make every unit's active-rollout key agree with its records, resume every
        active rollout, then keep running them until cancelled."""
        for record, revision in await self.records.take_over():
            if record.rollout_id not in self.runners:
                self._run(record, revision, resumed=True)
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        tasks = [task for task, _ in self.runners.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, LandlordError):
                await task
        self.runners.clear()

    def _created(self, record: RolloutRecord) -> bool:
        return record.rollout_id in self.state.rollouts.get((record.apartment, record.unit), {})

    def _run(self, record: RolloutRecord, revision: int, resumed: bool) -> None:
        runner = RolloutRunner(self.records, self.fleet, self.clock, self.runner_settings)
        task = asyncio.create_task(runner.run(record, revision, resumed),
                                   name=f"rollout {record.rollout_id}")
        self.runners[record.rollout_id] = (task, runner)

        def done(finished: asyncio.Task[RolloutRecord]) -> None:
            if self.runners.get(record.rollout_id, (None,))[0] is finished:
                del self.runners[record.rollout_id]
            if not finished.cancelled() and finished.exception() is not None:
                log.error("rollout %s stopped: %s", record.rollout_id, finished.exception())

        task.add_done_callback(done)

    # -- facts -----------------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"r{int(self.clock.now())}-{secrets.token_hex(3)}"

    def _facts(self, apartment: str, unit: str, building: str) -> DeployFacts:
        versions = dict(self.state.versions.get((apartment, unit), {}))
        # Only what this unit's versions depend on is looked at (admission checks direct
        # dependencies), through the unit index rather than every instance of the cluster.
        needed = {parse_dependency(text, apartment).unit
                  for found in versions.values() for text in found.tag.spec.dependencies}
        running: dict[str, frozenset[str]] = {}
        for name in needed:
            dep_apartment, _, dep_unit = name.partition("/")
            found_running = self.fleet.running_versions(dep_apartment, dep_unit)
            if found_running:
                running[name] = found_running
        active = self.records.active(apartment, unit)
        return DeployFacts(
            unit=self.registry.unit(apartment, unit),
            versions=versions,
            instances=self.state.instances_of(apartment, unit),
            active=active[0] if active else None,
            running=running,
            rooms=self._rooms(building),
            port_range=self.fleet.port_range,
            routes=self._routes(),
        )

    def _routes(self) -> list[RouteRecord]:
        return [found.value for found in self.state.routes.values()]

    def _check_entry_point(self, apartment: str, unit: str, version: str,
                           building: str) -> None:
        """A rollout to ``version`` not started by Deploy (rollback, retry) checks the
        entry point as admission does."""
        check_entry_point(apartment, unit, self.registry.version(apartment, unit, version),
                          building, self._routes())

    def _rooms(self, building: str) -> list[HostRoom]:
        # Placement sees hosts exactly as the first-deploy path does.
        return self.fleet.rooms(building)


def _refuse_stopped(unit: UnitRecord, what: str) -> None:
    """A stopped unit (``landlord units stop``) runs no stable version to move from: only a
    Deploy starts it again."""
    if unit.state == DeployState.STOPPED.value:
        raise FailedPrecondition(f"{unit.apartment}/{unit.unit} is stopped and cannot be {what}; "
                                 "deploy a version to start it again", unit=unit.unit)
