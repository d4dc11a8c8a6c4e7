"""The leader's side of agent streams: registration, reports, and the per-host lease.

Registration writes the host record only when something in it changed, keeps the host's
liveness key on a per-host lease, takes the agent's full state as the truth about what it
runs, and reconciles: duplicates are stopped, missing desired instances started again, and
every route of the building is sent. A report is a batched delta: it updates the leader's
memory, and etcd only when an instance's state actually changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import Conflict, InvalidArgument, Unavailable
from common.stream_commands import Command, StopInstance
from common.stream_messages import AgentReport, ObservedInstance, Registration
from coordinator.control import FleetControl
from coordinator.fleet import HostSession, command_id
from coordinator.liveness import HostHealth
from coordinator.reconcile import plan_register
from coordinator.records import EventRecord, HostRecord, StatusRecord, encode
from coordinator.store import Txn

__all__ = ["STATUS_FLUSH", "AgentSessions", "SessionSettings"]

log = logging.getLogger(__name__)

STATUS_FLUSH = 0.1
"""Seconds between writes of queued instance statuses."""
HOST_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class SessionSettings:
    heartbeat_interval: float = 10.0
    report_interval: float = 1.0
    liveness_grace: float = 10.0

    @property
    def lease_ttl(self) -> int:
        """A host's liveness key outlives a missed heartbeat plus the grace period."""
        return max(2, math.ceil(1.5 * self.heartbeat_interval + self.liveness_grace))


class AgentSessions:
    def __init__(self, control: FleetControl, settings: SessionSettings) -> None:
        self.control = control
        self.settings = settings
        self._leases: dict[str, int] = {}
        self._refreshed: dict[str, float] = {}
        self._unpersisted: dict[str, StatusRecord] = {}
        self._batch = control.store.max_txn_ops - 2
        self.status_writes = 0

    # -- registration ----------------------------------------------------------------------

    async def open(self, registration: Registration) -> tuple[HostSession, bool]:
        """Register a host; returns its session and whether it came back from ``lost``."""
        c = self.control
        c.leadership.fence  # noqa: B018  # a follower refuses before touching anything
        reg = _validated(registration)
        now, mono = c.clock.now(), c.clock.monotonic()
        existing = c.state.hosts.get(reg.host_id)
        returned = existing is not None and existing.value.status == "lost"
        record = HostRecord(
            host_id=reg.host_id, building=reg.building, address=reg.address,
            capacity=reg.capacity, labels=dict(reg.labels), enforceable=reg.enforceable,
            agent_version=reg.agent_version, images=tuple(sorted(reg.images)), status="alive",
            registered_at=existing.value.registered_at if existing else now,
            status_changed_at=now if existing is None or returned
            else existing.value.status_changed_at,
        )
        if existing is None or not existing.value.same_registration(record):
            await self._write_host(record)
        await self._ensure_lease(reg.host_id)
        session = HostSession(reg.host_id, reg.building, reg.address, mono)
        c.fleet.attach(session, mono)
        c.fleet.health[reg.host_id] = HostHealth.ALIVE
        c.fleet.images[reg.host_id] = frozenset(reg.images)
        c.fleet.forget_observations(reg.host_id)
        for obs in reg.instances:
            c.fleet.observe(obs)
        await self._persist([o for o in reg.instances if o.instance_id in c.state.instances])

        plan = plan_register(reg.host_id, reg.instances, c.state.instances_on(reg.host_id))
        for iid in plan.stop:
            log.info("host %s runs %s, which is not desired there: stopping it", reg.host_id, iid)
            c.fleet.send(reg.host_id, StopInstance(iid, c.settings.stop_grace_s, drain=True))
        await c.start_instances(plan.start)
        for route in c.routes_for_building(reg.building):
            session.send(Command(command_id(route), route))
        for obs in reg.instances:
            c.mark_route_dirty(obs.apartment, obs.unit)
        kind = "host.returned" if returned else "host.registered"
        await c.events.emit(
            kind, f"{reg.host_id} registered with {len(reg.instances)} instance(s)"
            + (f"; stopping {len(plan.stop)} duplicate(s)" if plan.stop else ""),
            host_id=reg.host_id, building=reg.building,
        )
        return session, returned

    async def _write_host(self, record: HostRecord) -> None:
        c = self.control
        key = c.layout.host(record.host_id)
        for _ in range(4):
            current = c.state.hosts.get(record.host_id)
            txn = Txn().require(key, current.mod_revision if current else 0)
            txn.put(key, encode(record))
            try:
                revision = await c.store.commit(txn, c.leadership.fence)
                await c.view.wait_for(revision)
                return
            except Conflict as exc:
                await c.catch_up(exc)
        raise Conflict(f"host {record.host_id} changed concurrently; retry", host=record.host_id)

    async def _ensure_lease(self, host_id: str) -> None:
        c = self.control
        lease = self._leases.get(host_id) or c.state.alive.get(host_id, 0)
        if lease and await c.store.refresh_lease(lease) > 0:
            self._leases[host_id] = lease
            self._refreshed[host_id] = c.clock.monotonic()
            return
        lease = await c.store.grant_lease(self.settings.lease_ttl)
        txn = Txn().put(c.layout.alive(host_id), b'{"since":%d}' % int(c.clock.now()), lease)
        await c.store.commit(txn, c.leadership.fence)
        self._leases[host_id] = lease
        self._refreshed[host_id] = c.clock.monotonic()

    async def refresh_leases(self) -> None:
        """Refresh due liveness leases of connected hosts (a keepalive, not a write)."""
        c = self.control
        due_after = self.settings.lease_ttl / 3
        now = c.clock.monotonic()
        due = [
            h for h in c.fleet.sessions
            if h in self._leases and now - self._refreshed.get(h, 0) >= due_after
        ]
        limit = asyncio.Semaphore(32)

        async def refresh(host_id: str) -> None:
            async with limit:
                try:
                    if await c.store.refresh_lease(self._leases[host_id]) > 0:
                        self._refreshed[host_id] = now
                    else:
                        self._leases.pop(host_id, None)
                        await self._ensure_lease(host_id)
                except Unavailable as exc:
                    log.warning("lease refresh for %s failed: %s", host_id, exc)

        await asyncio.gather(*(refresh(h) for h in due))

    async def drop_lease(self, host_id: str) -> None:
        lease = self._leases.pop(host_id, 0) or self.control.state.alive.get(host_id, 0)
        self._refreshed.pop(host_id, None)
        if lease:
            with contextlib.suppress(Unavailable):
                await self.control.store.revoke_lease(lease)

    def close(self, session: HostSession) -> None:
        self.control.fleet.detach(session, self.control.clock.monotonic())

    # -- reports ---------------------------------------------------------------------------

    async def report(self, session: HostSession, report: AgentReport) -> None:
        c = self.control
        if c.fleet.sessions.get(session.host_id) is not session:
            return
        c.fleet.heard_from(session.host_id, c.clock.monotonic())
        changed: list[ObservedInstance] = []
        for obs in report.changed:
            previous = c.fleet.observe(obs)
            if previous is None or previous.routable != obs.routable:
                c.mark_route_dirty(obs.apartment, obs.unit)
            if obs.instance_id in c.state.instances:
                changed.append(obs)
        for iid in report.removed_instance_ids:
            gone = c.fleet.unobserve(iid)
            if gone is not None:
                c.mark_route_dirty(gone.apartment, gone.unit)
        await self._persist(changed)
        if report.results:
            c.command_results(report.results)
        if report.windows:
            c.record_windows(report.windows)
        events = [
            EventRecord(type=e.type, time=e.time, message=e.message, apartment=e.apartment,
                        unit=e.unit, version=e.version, host_id=session.host_id,
                        instance_id=e.instance_id, details=dict(e.details))
            for e in report.events
        ]
        events += [
            c.events.make("command.failed", f"{r.command_id}: {r.error}",
                          host_id=session.host_id, command_id=r.command_id)
            for r in report.results if not r.ok
        ]
        if events:
            await c.events.append(events)

    async def _persist(self, observed: Sequence[ObservedInstance]) -> None:
        """Queue the status of instances whose state changed (only those) for writing.

        The leader flushes the queue every STATUS_FLUSH seconds, so the state changes of many
        hosts' reports share one transaction; reads on the leader see them at once anyway.
        """
        c = self.control
        for obs in observed:
            record = StatusRecord(obs.instance_id, obs.host_id, obs.state, obs.healthy,
                                  obs.restarts, obs.reason, c.clock.now())
            known = self._unpersisted.get(obs.instance_id) or c.state.statuses.get(
                obs.instance_id)
            if known is None or _differs(known, record):
                self._unpersisted[obs.instance_id] = record

    async def flush_statuses(self) -> None:
        """Write the queued statuses, up to a transaction's worth at a time."""
        c = self.control
        while self._unpersisted:
            batch = list(self._unpersisted.items())[: self._batch]
            txn = Txn()
            for iid, record in batch:
                if iid in c.state.instances:
                    txn.put(c.layout.status(iid), encode(record))
            try:
                if not txn.empty:
                    await c.store.commit(txn, c.leadership.fence)
                    self.status_writes += len(txn.puts)
            except Unavailable as exc:
                log.warning("status of %d instance(s) not persisted yet: %s", len(batch), exc)
                return
            for iid, record in batch:
                if self._unpersisted.get(iid) is record:
                    del self._unpersisted[iid]


def _differs(old: StatusRecord, new: StatusRecord) -> bool:
    return (old.state, old.healthy, old.restarts, old.reason, old.host_id) != (
        new.state, new.healthy, new.restarts, new.reason, new.host_id)


def _validated(reg: Registration) -> Registration:
    if not HOST_ID.match(reg.host_id):
        raise InvalidArgument(
            f"host id {reg.host_id!r} must be 1-63 letters, digits, '.', '_' or '-'",
            field="host_id")
    if not reg.building or not HOST_ID.match(reg.building):
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
