"""The coordinator's commands carried out on this host (``StreamAdapter.execute``).

Starting and stopping run as tasks, so a warm-up or a graceful stop never holds up the
commands behind it; both are idempotent by instance id and report through the state
changes they cause (and a ``instance.start_failed``/``instance.stop_failed`` event when
they fail). A start waits for a stop still freeing its port. Routes, weights and drains
are data plane calls made in place; the command result says whether they worked.
RunCheck runs a command in an instance's container (``docker exec``, bounded time and
output) and returns what it did for the command result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any, Protocol

from agent.dataplane import DataPlanePort, DataPlaneSettings, DataPlaneSpec
from agent.dataplane.model import ServerState
from agent.instances.spec import InstanceSpec, StateMode
from agent.instances.state_copy import copy_state
from agent.service import AgentService
from agent.stream.mapping import (
    check_output,
    check_timeout,
    instance_spec,
    plane_unit,
    route_changes,
    traffic_version,
)
from common.clock import Clock
from common.errors import Conflict, FailedPrecondition, InvalidArgument, LandlordError, NotFound
from common.event_types import EventType
from common.gc_kinds import GcKind
from common.lifecycle import InstanceState
from common.stream_commands import (
    COMMAND_KINDS,
    AgentCommand,
    CollectGarbage,
    DrainInstance,
    PauseInstance,
    ResumeInstance,
    RunCheck,
    SetRoute,
    SetWeights,
    StartInstance,
    StopInstance,
)
from common.stream_messages import CommandResult, ReportedEvent

__all__ = ["ChangeSink", "HostCommands", "RoutingPlane"]

log = logging.getLogger(__name__)

# How long a server that left a unit's route may keep finishing requests on this host.
ROUTE_DRAIN_TIMEOUT_S = 10.0
ROUTE_DRAIN_POLL_S = 0.1
PAUSE_SETTLE_S = 1.0
"""Seconds between a pause command and the freeze when the coordinator sets none: the
other hosts' requests on the instance (its route changed on every host first) end."""


WAKEABLE = InstanceState.COLLECTED
"""A record in this state starts again on a StartInstance of its id (a wake)."""


class RoutingPlane(DataPlanePort, Protocol):
    """The data plane with what the stream reads besides the Protocol: spec, clock,
    settings."""

    @property
    def clock(self) -> Clock: ...

    @property
    def settings(self) -> DataPlaneSettings: ...

    @property
    def spec(self) -> DataPlaneSpec: ...


class ChangeSink(Protocol):
    """Where command outcomes go to be reported (the StreamAdapter)."""

    def touched(self, instance_id: str) -> None: ...

    def add_event(self, event: ReportedEvent) -> None: ...


class HostCommands:
    def __init__(self, service: AgentService, plane: RoutingPlane | None, sink: ChangeSink,
                 drain_timeout: float = 10.0) -> None:
        self.service = service
        self.plane = plane
        self.sink = sink
        self.drain_timeout = drain_timeout
        self.owners: dict[str, tuple[str, str]] = {}
        """Data plane unit name -> (apartment, unit)."""
        self.starting: dict[str, tuple[InstanceSpec, asyncio.Task[None]]] = {}
        self.stopping: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._draining: set[tuple[str, str]] = set()
        self.sleeping: dict[str, tuple[str, str]] = {}
        """Data plane unit name -> (apartment, unit) of units whose last route asked to
        hold requests and wake them (``SetRoute.wake_on_request``)."""
        self._wanted: dict[str, dict[str, str]] = {}
        """Data-plane unit -> server -> state, as the last SetRoute listed them."""

    async def execute(self, command: AgentCommand) -> CommandResult | None:
        """Carry out one command; RunCheck returns its output, the others None."""
        if isinstance(command, RunCheck):
            return await self._run_check(command)
        if isinstance(command, StartInstance):
            self._accept_start(command)
        elif isinstance(command, StopInstance):
            self._accept_stop(command)
        elif isinstance(command, SetRoute):
            await self._set_route(command)
        elif isinstance(command, SetWeights):
            await self._set_weights(command)
        elif isinstance(command, DrainInstance):
            await self._drain(command)
        elif isinstance(command, CollectGarbage):
            self._accept_gc(command)
        elif isinstance(command, PauseInstance | ResumeInstance):
            self._accept_pause(command)
        else:  # pragma: no cover - the union is exhaustive
            raise InvalidArgument(f"unknown command {command!r}")
        return None

    async def close(self, timeout: float) -> None:
        """Let starts, stops and GC under way finish (up to ``timeout``), then cancel."""
        if not self._background:
            return
        _, late = await asyncio.wait(list(self._background), timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _failed(self, kind: str, spec: InstanceSpec, message: str) -> None:
        self.sink.add_event(ReportedEvent(
            type=kind, time=self.service.clock.now(), message=message,
            apartment=spec.apartment, unit=spec.unit, version=spec.version,
            instance_id=spec.instance_id))

    # -- instances -------------------------------------------------------------------------
    def _accept_start(self, cmd: StartInstance) -> None:
        spec = instance_spec(cmd)
        instance_id = spec.instance_id
        records = self.service.records
        record = records.find(instance_id)
        if instance_id in self.starting or (
                record is not None and instance_id not in self.stopping
                and record.lifecycle.state not in (InstanceState.STOPPED, WAKEABLE)):
            return  # already started (or starting): a repeated command is harmless
        # one being stopped or collected starts again once that is done (a wake that
        # overtook its collection)
        holder = records.port_holder(spec.port, ignore={instance_id, *self.stopping})
        if holder is not None:
            raise Conflict(f"port {spec.port} is used by {holder.instance_id}",
                           port=spec.port, instance=instance_id)
        after = [task for iid, (port, task) in self.stopping.items()
                 if port == spec.port or iid == instance_id]
        self.owners[plane_unit(spec.apartment, spec.unit)] = (spec.apartment, spec.unit)
        task = self._spawn(self._start(spec, cmd.state_from_instance_id, after),
                           f"start-{instance_id}")
        self.starting[instance_id] = (spec, task)
        task.add_done_callback(lambda _: self.starting.pop(instance_id, None))

    async def _start(self, spec: InstanceSpec, state_from: str,
                     after: list[asyncio.Task[None]]) -> None:
        if after:
            await asyncio.wait(after)
        try:
            if state_from and spec.state_mode is StateMode.SNAPSHOT:
                await asyncio.to_thread(self._carry_state, spec, state_from)
            if spec.state_mode is not StateMode.NONE:  # a wake: the state collection saved
                restored = await asyncio.to_thread(self.service.gc.restore, spec)
                if restored is not None:
                    log.info("%s: state restored from %s", spec.instance_id, restored)
            await self.service.start_instance(spec, wait=False)
        except (LandlordError, OSError) as exc:
            log.warning("starting %s failed: %s", spec.instance_id, exc)
            self._failed(EventType.START_FAILED, spec, str(exc))
        finally:
            self.sink.touched(spec.instance_id)

    def _carry_state(self, spec: InstanceSpec, source: str) -> None:
        """A snapshot-mode instance starts from a copy of the state of the one it follows."""
        sup = self.service.supervisor
        target = sup.state_host_dir(spec)
        origin = sup.state_host_dir(replace(spec, instance_id=source))
        if target is not None and origin is not None and origin.is_dir() \
                and not target.exists():
            copy_state(origin, target)  # links copied as links, never followed

    def _accept_stop(self, cmd: StopInstance) -> None:
        instance_id = cmd.instance_id
        starting = self.starting.get(instance_id)
        record = self.service.records.find(instance_id)
        if record is not None:
            spec = record.spec
        elif starting is not None:
            spec = starting[0]
        else:
            return  # not here at all: stopped already
        if instance_id in self.stopping:
            return
        after = [starting[1]] if starting is not None else []
        task = self._spawn(self._stop(spec, cmd, after), f"stop-{instance_id}")
        self.stopping[instance_id] = (spec.port, task)
        task.add_done_callback(lambda _: self.stopping.pop(instance_id, None))

    async def _stop(self, spec: InstanceSpec, cmd: StopInstance,
                    after: list[asyncio.Task[None]]) -> None:
        if after:
            await asyncio.wait(after)
        grace = cmd.grace_s if cmd.grace_s > 0 else None
        try:
            if cmd.drain and self.plane is not None:
                limit = min(grace or self.service.config.stop_grace, self.drain_timeout)
                for name, unit in sorted(self.plane.spec.units.items()):
                    if any(s.name == spec.instance_id for s in unit.servers):
                        # A route update may be draining it out too and remove it first;
                        # that must not keep the container from being stopped.
                        with contextlib.suppress(NotFound):
                            await self.plane.drain_and_remove(name, spec.instance_id, limit)
            record = self.service.records.find(spec.instance_id)
            if cmd.collect and record is not None:
                await self.service.gc.collect_instance(
                    record, "idle unit: no request on any host for its idle timeout",
                    keep=True)
            else:
                await self.service.stop_instance(spec.instance_id, grace)
        except NotFound:
            pass  # gone already
        except (LandlordError, OSError) as exc:
            log.warning("stopping %s failed: %s", spec.instance_id, exc)
            self._failed(EventType.STOP_FAILED, spec, str(exc))
        finally:
            self.sink.touched(spec.instance_id)

    # -- data plane ------------------------------------------------------------------------
    def _require_plane(self) -> RoutingPlane:
        if self.plane is None:
            raise FailedPrecondition("this agent runs without a data plane")
        return self.plane

    async def _set_route(self, cmd: SetRoute) -> None:
        # the versions whose images GC keeps, even on a host without a data plane
        self.service.gc.protect(cmd.apartment, cmd.unit, cmd.protected_versions)
        plane = self._require_plane()
        name = plane_unit(cmd.apartment, cmd.unit)
        self.owners[name] = (cmd.apartment, cmd.unit)
        if cmd.wake_on_request and cmd.service_port > 0:
            self.sleeping[name] = (cmd.apartment, cmd.unit)
        else:
            self.sleeping.pop(name, None)
        if cmd.service_port <= 0:  # a unit without an entry point: nothing to serve here
            if name in plane.spec.units:
                await plane.remove_unit(name)
            return
        await plane.ensure_unit(name, cmd.service_port, cmd.health_path, sticky=cmd.sticky,
                                retry_after_s=cmd.retry_after_s)
        self._wanted[name] = {srv.server: srv.state for srv in cmd.servers}
        changes = route_changes(plane.spec.units.get(name), cmd.servers)
        for s in changes.upserts:
            await plane.add_server(name, s.name, s.addr, s.port, s.version, s.weight, s.state)
        if changes.weights:
            await plane.set_weights(name, changes.weights)
        for server in changes.removals:
            # An instance leaving the route may still be answering requests this host
            # sent it: drain it in the background (no new requests at once, removed when
            # its sessions end), never cut it off mid-request.
            if (name, server) not in self._draining:
                self._draining.add((name, server))
                self._spawn(self._drain_removed(plane, name, server), f"drain {server}")
        version = traffic_version(cmd.servers)
        if version is not None:
            self.service.set_stable_version(cmd.apartment, cmd.unit, version)

    async def _drain_removed(self, plane: RoutingPlane, unit: str, server: str) -> None:
        """Drain a server that left the unit's route, then remove it, unless a later route
        wants it again (then it gets that route's state back and stays)."""
        try:
            if server in self._wanted.get(unit, {}):
                return
            await plane.set_state(unit, server, ServerState.DRAIN)
            deadline = time.monotonic() + ROUTE_DRAIN_TIMEOUT_S
            while time.monotonic() < deadline and server not in self._wanted.get(unit, {}):
                busy = [o for o in await plane.servers(unit)
                        if o.name == server and o.sessions + o.queued > 0]
                if not busy:
                    break
                await asyncio.sleep(ROUTE_DRAIN_POLL_S)
            wanted = self._wanted.get(unit, {}).get(server)
            if wanted is not None:
                await plane.set_state(unit, server, ServerState(wanted or "ready"))
            else:
                await plane.remove_server(unit, server)
        except NotFound:
            pass  # removed meanwhile (its instance was stopped): nothing left to do
        except (LandlordError, OSError) as exc:
            log.warning("draining %s out of %s failed: %s", server, unit, exc)
        finally:
            self._draining.discard((unit, server))

    async def _set_weights(self, cmd: SetWeights) -> None:
        plane = self._require_plane()
        name = plane_unit(cmd.apartment, cmd.unit)
        known = {s.name for s in plane.spec.unit(name).servers}
        await plane.set_weights(name, {k: w for k, w in cmd.weights.items() if k in known})
        unknown = sorted(set(cmd.weights) - known)
        if unknown:
            raise NotFound(f"{cmd.apartment}/{cmd.unit} has no server(s) {', '.join(unknown)} "
                           "on this host; the others were set", unit=cmd.unit)

    async def _drain(self, cmd: DrainInstance) -> None:
        plane = self._require_plane()
        name = plane_unit(cmd.apartment, cmd.unit)
        unit = plane.spec.units.get(name)
        if unit is not None and any(s.name == cmd.instance_id for s in unit.servers):
            await plane.drain_and_remove(name, cmd.instance_id,
                                         cmd.timeout_s if cmd.timeout_s > 0 else None)

    # -- pause and resume (issue 17) -------------------------------------------------------
    def _accept_pause(self, cmd: PauseInstance | ResumeInstance) -> None:
        self.service.records.get(cmd.instance_id)  # NotFound for an instance not here
        self._spawn(self._pause(cmd), f"{COMMAND_KINDS[type(cmd)]}-{cmd.instance_id}")

    async def _pause(self, cmd: PauseInstance | ResumeInstance) -> None:
        """Pause: the coordinator took the instance out of every host's route; let this
        host's requests on it end and the other hosts' settle, then freeze it."""
        try:
            if isinstance(cmd, ResumeInstance):
                await self.service.resume_instance(cmd.instance_id)
                return
            settle = time.monotonic() + (cmd.settle_s or PAUSE_SETTLE_S)
            if self.plane is not None:
                await self._wait_idle(self.plane, cmd.instance_id)
            await asyncio.sleep(max(0.0, settle - time.monotonic()))
            await self.service.pause_instance(cmd.instance_id)
        except (LandlordError, OSError) as exc:
            log.warning("%s of %s failed: %s", COMMAND_KINDS[type(cmd)], cmd.instance_id, exc)
        finally:
            self.sink.touched(cmd.instance_id)

    async def _wait_idle(self, plane: RoutingPlane, server: str) -> None:
        """Until no session of this host's HAProxy is on ``server`` (or the drain timeout)."""
        deadline = time.monotonic() + self.drain_timeout
        for name, unit in sorted(plane.spec.units.items()):
            if not any(s.name == server for s in unit.servers):
                continue
            while time.monotonic() < deadline:
                if not any(o.name == server and o.sessions + o.queued > 0
                           for o in await plane.servers(name)):
                    break
                await asyncio.sleep(ROUTE_DRAIN_POLL_S)

    # -- checks ----------------------------------------------------------------------------
    async def _run_check(self, cmd: RunCheck) -> CommandResult:
        timeout = check_timeout(cmd)
        result = await self.service.exec_in_instance(cmd.instance_id, cmd.argv, timeout)
        return check_output(result, timeout)

    # -- garbage collection ----------------------------------------------------------------
    def _accept_gc(self, cmd: CollectGarbage) -> None:
        self._spawn(self._collect(cmd.kinds or tuple(GcKind)), "gc-requested")

    async def _collect(self, kinds: Sequence[GcKind]) -> None:
        for kind in kinds:
            try:
                await self.service.run_gc(kind)
            except (LandlordError, OSError) as exc:
                log.warning("gc %s failed: %s", kind, exc)
                self.sink.add_event(ReportedEvent(
                    type=EventType.GC_FAILED, time=self.service.clock.now(), message=str(exc),
                    details={"kind": kind}))
