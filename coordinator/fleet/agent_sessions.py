"""The leader's side of agent streams: registration and reports.

Registration writes the host record only when something in it changed, keeps the host's
liveness key on a per-host lease (coordinator/fleet/host_records.py), takes the agent's full
state as the truth about what it runs, and reconciles: duplicates are stopped, missing
desired instances started again, and every route of the building is sent. A report is a
batched delta: it updates the leader's memory, and etcd only when an instance's state
actually changed (coordinator/fleet/status_writer.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

from common.clock import Clock
from common.errors import FailedPrecondition, InvalidArgument
from common.identity import IDENTITY_NAME_PATTERN, IDENTITY_NAME_RULE
from common.stream_commands import Command, PauseInstance, ResumeInstance
from common.stream_messages import (
    AgentReport,
    CommandResult,
    MetricsWindow,
    ObservedInstance,
    OutputChunk,
    Registration,
)
from coordinator.fleet.decommission import refusal as decommissioned_refusal
from coordinator.fleet.host_records import HostRecords
from coordinator.fleet.reconcile import plan_register
from coordinator.fleet.report_scope import DropKind, own_observations, scope_report
from coordinator.fleet.sessions import Fleet, HostSession, command_id
from coordinator.fleet.status_writer import StatusWriter
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import Fenced
from coordinator.state.records import EventRecord, HostHealth, HostRecord, InstanceRecord

__all__ = ["AgentSessions", "ResultSink", "SessionCommands", "WindowSink"]

log = logging.getLogger(__name__)

EVENT_BATCH_DELAY = 0.05
"""Seconds registration events wait to be written together (a takeover's thousand hosts
make a few transactions, not a thousand)."""


class SessionCommands(Protocol):
    """What registration and reports send to hosts (coordinator/fleet/dispatch.py)."""

    async def start_instances(self, records: Sequence[InstanceRecord]) -> int: ...

    def stop_unwanted(self, host_id: str, instance_id: str, collect: bool = False) -> None: ...

    def mark_building_routes_dirty(self, building: str) -> None: ...

    def mark_route_dirty(self, apartment: str, unit: str) -> None: ...


class WindowSink(Protocol):
    """Where reported request windows go (coordinator/fleet/metrics_windows.py)."""

    def record(self, windows: Sequence[MetricsWindow]) -> None: ...

    def note_requests(self, windows: Sequence[MetricsWindow]) -> None: ...


class ResultSink(Protocol):
    """Who waits for command results (coordinator/fleet/check_calls.py)."""

    def deliver(self, results: Sequence[CommandResult]) -> None: ...


class OutputSink(ResultSink, Protocol):
    """Who waits for streamed output (coordinator/fleet/output_calls.py)."""

    def deliver_output(self, host_id: str, chunks: Sequence[OutputChunk]) -> None: ...


class UnitWakes(Protocol):
    """Waking collected units (coordinator/fleet/idle_units.py)."""

    async def wake(self, apartment: str, unit: str, why: str) -> tuple[str, ...]: ...


class AgentSessions:
    def __init__(self, *, hosts: HostRecords, statuses: StatusWriter, state: ClusterState,
                 fleet: Fleet, events: EventLog, clock: Clock, commands: SessionCommands,
                 windows: WindowSink, results: ResultSink, leadership: Fenced,
                 outputs: OutputSink | None = None, wakes: UnitWakes | None = None) -> None:
        self._hosts = hosts
        self._statuses = statuses
        self._state = state
        self._fleet = fleet
        self._events = events
        self._clock = clock
        self._leadership = leadership
        self._commands = commands
        self._windows = windows
        self._results = results
        self._outputs = outputs
        self._wakes = wakes
        self._announcements: dict[HostSession, tuple[str, str]] = {}
        self._pending_events: list[EventRecord] = []
        self._event_writer: asyncio.Task[None] | None = None
        """Sessions opened whose lease and event ``announce`` has still to write."""
        self.foreign_dropped: Counter[DropKind] = Counter()
        """Statuses, removals, events and windows dropped because they were about another
        host's instances (coordinator/fleet/report_scope.py), by kind."""

    # -- registration ----------------------------------------------------------------------

    async def open(self, registration: Registration) -> tuple[HostSession, bool]:
        """Register a host; returns its session and whether it came back from ``lost``."""
        self._leadership.fence  # noqa: B018  # a follower refuses before touching anything
        reg = _validated(registration)
        refused = decommissioned_refusal(self._state, reg.host_id)
        if refused:
            raise FailedPrecondition(refused, host=reg.host_id)
        now, mono = self._clock.now(), self._clock.monotonic()
        existing = self._state.hosts.get(reg.host_id)
        returned = existing is not None and existing.value.status == HostHealth.LOST
        record = HostRecord(
            host_id=reg.host_id, building=reg.building, address=reg.address,
            capacity=reg.capacity, labels=dict(reg.labels), enforceable=reg.enforceable,
            agent_version=reg.agent_version, images=tuple(sorted(reg.images)),
            registered_at=existing.value.registered_at if existing else now,
            status_changed_at=now if existing is None or returned
            else existing.value.status_changed_at,
        )
        if existing is None or not existing.value.same_registration(record):
            await self._hosts.register(record)
        session = HostSession(reg.host_id, reg.building, reg.address, mono)
        own, foreign = own_observations(reg.instances, reg.host_id, self._placed)
        if foreign:
            self._dropped(session, {DropKind.STATUS: len(foreign)},
                          {DropKind.STATUS: foreign[0].instance_id})
        self._fleet.connect(session, reg.images, own, mono)
        self._statuses.queue(own)

        plan = plan_register(reg.host_id, reg.instances, self._state.instances_on(reg.host_id))
        for iid in plan.stop:
            log.info("host %s runs %s, which is not desired there: stopping it", reg.host_id, iid)
            self._commands.stop_unwanted(reg.host_id, iid)
        for iid in plan.collect:
            log.info("host %s runs %s, which was collected: collecting it", reg.host_id, iid)
            self._commands.stop_unwanted(reg.host_id, iid, collect=True)
        await self._commands.start_instances(plan.start)
        # the building's routes go out at the next flush, one command per unit for every
        # host that registered meanwhile (after a takeover: all of them), not one per host
        self._commands.mark_building_routes_dirty(reg.building)
        # what differs from the pause marks (the routes already leave paused instances out;
        # a host waits before it freezes one, so they reach it first)
        freezes: list[PauseInstance | ResumeInstance] = [
            *map(PauseInstance, plan.pause), *map(ResumeInstance, plan.resume)]
        for freeze in freezes:
            session.send(Command(command_id(freeze), freeze))
        for obs in reg.instances:
            self._commands.mark_route_dirty(obs.apartment, obs.unit)
        kind = "host.returned" if returned else "host.registered"
        self._announcements[session] = (kind, (
            f"{reg.host_id} registered with {len(reg.instances)} instance(s)"
            + (f"; stopping {len(plan.stop)} duplicate(s)" if plan.stop else "")))
        return session, returned

    async def announce(self, session: HostSession) -> None:
        """After Registered is on its way: the host's liveness lease (the one it had,
        refreshed later by the liveness tick, or a new one), and the event of its
        registration. Kept off the answer, so a thousand hosts re-registering with a new
        leader are not each held by two etcd round trips; a failure here (etcd gone, the
        lead lost) raises, and the caller ends the session. The event is written with those
        of the other hosts registering meanwhile (one transaction for many)."""
        kind, message = self._announcements.pop(session, ("", ""))
        if not self._hosts.adopt_lease(session.host_id):
            await self._hosts.ensure_lease(session.host_id)
        if kind:
            self._pending_events.append(self._events.make(
                kind, message, host_id=session.host_id, building=session.building))
            if self._event_writer is None or self._event_writer.done():
                self._event_writer = asyncio.create_task(self._write_events(),
                                                         name="registration-events")

    async def _write_events(self) -> None:
        """Registration events, a batch at a time (``append`` logs a failure)."""
        while self._pending_events:
            await asyncio.sleep(EVENT_BATCH_DELAY)
            events, self._pending_events = self._pending_events, []
            await self._events.append(events)

    def close(self, session: HostSession) -> None:
        self._announcements.pop(session, None)
        self._fleet.detach(session, self._clock.monotonic())

    # -- reports ---------------------------------------------------------------------------

    @property
    def observed(self) -> Mapping[str, ObservedInstance]:
        """The latest observations, for the stream's converter (``report_from_pb``)."""
        return self._fleet.observed

    async def report(self, session: HostSession, report: AgentReport) -> None:
        fleet = self._fleet
        if fleet.sessions.get(session.host_id) is not session:
            return
        fleet.heard_from(session.host_id, self._clock.monotonic())
        host_id = session.host_id
        self._note_requests(host_id, report.windows)
        scoped = scope_report(report, host_id, self._placed, fleet.observed_ids_on(host_id),
                              lambda: frozenset(r.unit_key
                                                for r in self._state.instances_on(host_id)),
                              lambda apartment, unit: self._routed(session, apartment, unit))
        if scoped.dropped:
            self._dropped(session, scoped.dropped, scoped.examples)
        report = scoped.report
        for obs in report.changed:
            previous = fleet.observe(obs)
            if previous is None or previous.routable != obs.routable:
                self._commands.mark_route_dirty(obs.apartment, obs.unit)
        for iid in report.removed_instance_ids:
            gone = fleet.unobserve(iid)
            if gone is not None:
                self._commands.mark_route_dirty(gone.apartment, gone.unit)
        self._statuses.queue(report.changed)
        if report.usage:
            for reading in report.usage:
                fleet.observe_usage(reading)
            # a status not persisted yet is written as a full report would have
            self._statuses.queue([fleet.observed[r.instance_id] for r in report.usage
                                  if r.instance_id in fleet.observed])
        if report.results:
            self._results.deliver(report.results)
            if self._outputs is not None:
                self._outputs.deliver(report.results)
        if report.output and self._outputs is not None:
            self._outputs.deliver_output(session.host_id, report.output)
        if report.windows:
            self._windows.record(report.windows)
        await self._wake(host_id, report.wake_units)
        events = [
            EventRecord(type=e.type, time=e.time, message=e.message, apartment=e.apartment,
                        unit=e.unit, version=e.version, host_id=session.host_id,
                        instance_id=e.instance_id, details=dict(e.details))
            for e in report.events
        ]
        events += [
            self._events.make("command.failed", f"{r.command_id}: {r.error}",
                              host_id=session.host_id, command_id=r.command_id)
            for r in report.results if not r.ok
        ]
        if events:
            await self._events.append(events)

    def _note_requests(self, host_id: str, windows: Sequence[MetricsWindow]) -> None:
        """Requests that entered this host for units of its building count as activity
        (idle collection) wherever the instance runs: the scope below keeps only windows
        of this host's own instances for judging rollouts. A forged window can at most
        keep a unit of its own building awake."""
        host = self._state.hosts.get(host_id)
        if host is None or not windows:
            return
        building = host.value.building
        self._windows.note_requests([
            w for w in windows
            if (unit := self._state.units.get((w.apartment, w.unit))) is not None
            and unit.value.building == building])

    async def _wake(self, host_id: str, units: Sequence[tuple[str, str]]) -> None:
        """A request reached collected units on this host: wake those of its building."""
        if self._wakes is None:
            return
        host = self._state.hosts.get(host_id)
        for apartment, unit in sorted(set(units)):
            found = self._state.units.get((apartment, unit))
            if found is None or host is None or found.value.building != host.value.building:
                continue  # not a unit this host serves: nothing to wake
            await self._wakes.wake(apartment, unit, f"request on {host_id}")

    def _routed(self, session: HostSession, apartment: str, unit: str) -> bool:
        """Whether the unit's route goes to the session's host (its building's)."""
        route = self._state.routes.get((apartment, unit))
        return route is not None and route.value.building == session.building

    def _placed(self, instance_id: str) -> InstanceRecord | None:
        found = self._state.instances.get(instance_id)
        return found.value if found is not None else None

    def _dropped(self, session: HostSession, dropped: dict[DropKind, int],
                 examples: dict[DropKind, str]) -> None:
        """Count what a host said about others' instances; warn once per kind per session."""
        self.foreign_dropped.update(dropped)
        for kind, count in dropped.items():
            if kind in session.warned:
                continue
            session.warned.add(kind)
            log.warning("host %s reported %d %s(s) that are not its own to report (%s, ...);"
                        " dropped (further ones on this stream are counted, not logged)",
                        session.host_id, count, kind, examples.get(kind, ""))


def _validated(reg: Registration) -> Registration:
    if not IDENTITY_NAME_PATTERN.fullmatch(reg.host_id):
        raise InvalidArgument(f"host id {reg.host_id!r} is invalid: {IDENTITY_NAME_RULE}",
                              field="host_id")
    if not reg.building or not IDENTITY_NAME_PATTERN.fullmatch(reg.building):
        raise InvalidArgument(f"building {reg.building!r} is not a valid name", field="building")
    if not reg.address or "/" in reg.address or " " in reg.address:
        raise InvalidArgument(f"address {reg.address!r} is not a host address", field="address")
    if reg.capacity.cpu <= 0 or reg.capacity.memory <= 0:
        raise InvalidArgument("capacity needs cpu and memory above zero", field="capacity")
    for obs in reg.instances:
        if obs.host_id and obs.host_id != reg.host_id:
            raise InvalidArgument(
                f"instance {obs.instance_id} claims host {obs.host_id}, not {reg.host_id}",
                field="instances")
    return reg
