"""StreamAdapter: this host as the coordinator stream sees it (``AgentEndpoint``).

It joins the supervision service (``AgentService``) and the data plane (HAProxy) behind
the three things the stream needs: who this host is and what it runs, what changed, and
one handler for commands (``agent.stream.host_commands``). Translations are pure
(``agent.stream.mapping``); this module decides when to do the I/O.

- Instances touched by an agent event or a command are reported with their current state
  in the next batch (gone ones as removed); every event but plain state/health changes is
  forwarded.
- Every ``window_interval`` the data plane's completed request buckets are queued, once
  each, per (unit, version, instance), so the coordinator can add windows up.
- Every ``usage_interval`` instance usage (latest monitor sample) and host usage.
- Without a data plane (``plane=None``) instance commands work and data plane commands
  fail with FailedPrecondition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace

import psutil

from agent.dataplane.wake_hold import WakeListener
from agent.instances.events import AgentEvent
from agent.instances.records import InstanceRecords
from agent.instances.store import InstanceRecord
from agent.runtime.protocol import ExecSource, LogsSource, OutputPiece
from agent.service import AgentService
from agent.stream.endpoint import ChangeBatch
from agent.stream.host_commands import HostCommands, RoutingPlane
from agent.stream.mapping import (
    check_timeout,
    instance_report,
    plane_unit,
    reported_event,
    window_report,
)
from common.errors import FailedPrecondition, LandlordError
from common.resources import Resources
from common.stream_commands import COMMAND_KINDS, AgentCommand, ExecStream, ReadLogs
from common.stream_messages import (
    CommandResult,
    MetricsWindow,
    ObservedInstance,
    Registration,
    ReportedEvent,
)

__all__ = ["AdapterSettings", "StreamAdapter", "measure_capacity"]

log = logging.getLogger(__name__)


def measure_capacity(data_dir: str, reserved: Resources, network_bps: int) -> Resources:
    """Host capacity from psutil (cpu cores, memory, disk of ``data_dir``) minus ``reserved``."""
    total = Resources(
        cpu=float(psutil.cpu_count(logical=True) or 1),
        memory=int(psutil.virtual_memory().total),
        storage=int(psutil.disk_usage(data_dir).total),
        network=network_bps,
    )
    return total.minus(reserved)


@dataclass(frozen=True)
class AdapterSettings:
    window_interval: float = 1.0
    """How often completed request buckets are collected for the coordinator."""
    usage_interval: float = 5.0
    """How often instance and host usage is reported."""
    images_interval: float = 30.0
    """How often the local image list (sent at every registration) is refreshed."""
    max_events: int = 2000
    max_windows: int = 20_000
    """Buffered events and windows while no coordinator takes them (oldest dropped)."""
    drain_timeout: float = 10.0
    """Longest a stop with drain waits for the instance's sessions on this host."""
    close_timeout: float = 10.0
    """Longest close() waits for starts and stops under way before cancelling them."""


WAKE_REASK_S = 2.0
"""A held unit's wake is asked again this often while requests keep coming (a lost ask)."""


class StreamAdapter:
    def __init__(self, service: AgentService, plane: RoutingPlane | None,
                 settings: AdapterSettings | None = None, agent_version: str = "") -> None:
        self.service = service
        self.plane = plane
        self.settings = settings or AdapterSettings()
        self.agent_version = agent_version
        self._identity: Registration | None = None
        self._images: tuple[str, ...] = ()
        self._dirty: set[str] = set()
        self._events: deque[ReportedEvent] = deque(maxlen=self.settings.max_events)
        self._windows: deque[MetricsWindow] = deque(maxlen=self.settings.max_windows)
        self._host_usage: dict[str, float] = {}
        self._usage: dict[str, dict[str, float]] = {}
        self._wakes: set[tuple[str, str]] = set()
        self.wake_listener: WakeListener | None = None
        """Answers HAProxy's hold script (started by the daemon; closed with ``run``)."""
        self._wake_asked: dict[tuple[str, str], float] = {}
        self._cpu: dict[str, tuple[float, int]] = {}
        self._signal = asyncio.Event()
        self._apartments: dict[str, str] = {}
        self.commands = HostCommands(service, plane, self, self.settings.drain_timeout)
        self.command_timed: Callable[[str, bool, float], None] = lambda kind, ok, s: None
        """Told each command's kind, whether it succeeded, and its seconds (metrics)."""
        self.wake_counted: Callable[[bool, bool], None] = lambda held, sent: None
        """Told of each request HAProxy found no usable server for: whether it is held,
        and whether a wake was asked of the coordinator for it (metrics)."""

    @property
    def _records(self) -> InstanceRecords:
        return self.service.records

    # -- life ------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Measure capacity and abilities, list images, and feed GC from the data plane."""
        config = self.service.config
        reserved = Resources(cpu=config.reserved_cpu, memory=config.reserved_memory,
                             storage=config.reserved_storage)
        capacity = await asyncio.to_thread(measure_capacity, str(config.data_dir), reserved,
                                           config.network_capacity)
        self._identity = Registration(
            host_id=config.host_id, building=config.building,
            address=config.advertise_address, capacity=capacity,
            enforceable=await self._enforceable(), agent_version=self.agent_version)
        await self.refresh_images()
        if self.plane is not None:
            self.service.set_activity_source(self.last_activity)

    async def _enforceable(self) -> tuple[str, ...]:
        sup = self.service.supervisor
        found = ["cpu", "memory", "storage"]  # storage: a quota or eviction, both enforce
        if sup.shaper is not None and self.service.config.bandwidth:
            # bridged instances (the default) are shaped both ways wherever ifb works
            shaping = await asyncio.to_thread(sup.shaper.available)
            if shaping.enforced:
                found.append("network")
        return tuple(found)

    async def refresh_images(self) -> None:
        infos = await self.service.runtime.images()
        # tags and digest references: a version pinned by digest is found by either
        self._images = tuple(sorted({ref for info in infos for ref in info.references}))

    async def run(self, stop: asyncio.Event) -> None:
        """Follow events and collect windows and usage until ``stop``; then close()."""
        follower = asyncio.create_task(self._follow_events(), name="stream-adapter-events")
        loop = asyncio.get_running_loop()
        next_usage = next_images = loop.time()
        try:
            while not stop.is_set():
                now = loop.time()
                if self.plane is not None:
                    self.collect_windows()
                if now >= next_usage:
                    next_usage = now + self.settings.usage_interval
                    self.refresh_usage()
                if now >= next_images:
                    next_images = now + self.settings.images_interval
                    try:
                        await self.refresh_images()
                    except LandlordError as exc:
                        log.warning("listing images failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.window_interval)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            if self.wake_listener is not None:
                await self.wake_listener.close()
            await self.commands.close(self.settings.close_timeout)

    async def _follow_events(self) -> None:
        async for event in self.service.bus.subscribe():
            self.on_event(event)

    def on_event(self, event: AgentEvent) -> None:
        instance_id = event.instance
        if instance_id:
            self._dirty.add(instance_id)
        found = reported_event(event, self._apartment_of(instance_id))
        if found is not None:
            self._events.append(found)
        self._signal.set()

    def _apartment_of(self, instance_id: str) -> str:
        record = self._records.find(instance_id)
        if record is not None:
            self._apartments[instance_id] = record.spec.apartment
            return record.spec.apartment
        return self._apartments.get(instance_id, "")

    # -- AgentEndpoint: what this host is and runs -----------------------------------------
    def identity(self) -> Registration:
        """Who this host is (without its instances and images)."""
        if self._identity is None:
            raise FailedPrecondition("the stream adapter is not prepared yet")
        return self._identity

    def registration(self) -> Registration:
        return replace(self.identity(), instances=tuple(self.snapshot()), images=self._images)

    def snapshot(self) -> Sequence[ObservedInstance]:
        return [self._report(record) for record in self._records.all()]

    def _report(self, record: InstanceRecord) -> ObservedInstance:
        history = record.lifecycle.history
        reason = history[-1].reason if history else ""
        self._apartments[record.instance_id] = record.spec.apartment
        return instance_report(self.service.supervisor.view(record),
                               self.service.config.host_id, reason,
                               self._usage.get(record.instance_id))

    async def next_changes(self, timeout: float) -> ChangeBatch:
        if not self._pending():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._signal.wait(), timeout)
        self._signal.clear()
        return self._take()  # no await from here on: a cancelled wait loses nothing

    def _pending(self) -> bool:
        return bool(self._dirty or self._events or self._windows or self._wakes)

    def wake_asked(self, backend: str) -> bool:
        """HAProxy found no usable server in ``backend`` (agent/dataplane/wake_hold.py):
        whether to hold the request, i.e. its unit is collected; then the coordinator is
        asked to wake it (at most every ``WAKE_REASK_S`` per unit)."""
        key = self.commands.sleeping.get(backend.partition(".")[2])
        if key is None:
            self.wake_counted(False, False)
            return False
        now = time.monotonic()
        sent = now - self._wake_asked.get(key, -WAKE_REASK_S) >= WAKE_REASK_S
        if sent:
            self._wake_asked[key] = now
            self._wakes.add(key)
            self._signal.set()
        self.wake_counted(True, sent)
        return True

    def _take(self) -> ChangeBatch:
        batch = ChangeBatch(host_usage=dict(self._host_usage))
        still: set[str] = set()
        for instance_id in sorted(self._dirty):
            record = self._records.find(instance_id)
            if record is not None:
                batch.changed.append(self._report(record))
            elif instance_id in self.commands.starting:
                still.add(instance_id)  # its record appears once the start task runs
            else:
                batch.removed.append(instance_id)
                self._usage.pop(instance_id, None)
                self._cpu.pop(instance_id, None)
                self._apartments.pop(instance_id, None)
        self._dirty = still
        batch.events, batch.windows = list(self._events), list(self._windows)
        batch.wake_units, self._wakes = sorted(self._wakes), set()
        self._events.clear()
        self._windows.clear()
        return batch

    # -- periodic collection ---------------------------------------------------------------
    def collect_windows(self) -> None:
        """Queue the request windows the data plane completed since the last call (each
        request in exactly one window, which lets the coordinator add windows up)."""
        if self.plane is None:
            return
        taken = False
        host_id = self.service.config.host_id
        for window in self.plane.completed_windows():
            owner = self._owner(window.unit)
            if owner is not None and window.version and window.instance:
                # requests that reached no server (no version) are not any version's
                self._windows.append(window_report(host_id, *owner, window))
                taken = True
        if taken:
            self._signal.set()

    def _owner(self, name: str) -> tuple[str, str] | None:
        owners = self.commands.owners
        found = owners.get(name)
        if found is None:
            for record in self._records.all():
                spec = record.spec
                if plane_unit(spec.apartment, spec.unit) == name:
                    found = owners[name] = (spec.apartment, spec.unit)
                    break
        return found

    def refresh_usage(self) -> None:
        """Instance usage from the latest monitor samples, host usage from psutil."""
        now = self.service.clock.monotonic()
        for instance_id in [r.instance_id for r in self._records.all()]:
            figures = self.service.monitor.figures(instance_id)
            if not figures:
                continue
            usage = dict(self._usage.get(instance_id, {}))
            usage["memory_bytes"] = float(figures.get("memory_working_set") or 0)
            usage["pids"] = float(figures.get("pids") or 0)
            spent = int(figures.get("cpu_usage_ns") or 0)
            before = self._cpu.get(instance_id)
            if before is None or spent != before[1]:
                if before is not None and now > before[0] and spent > before[1]:
                    usage["cpu_cores"] = (spent - before[1]) / 1e9 / (now - before[0])
                self._cpu[instance_id] = (now, spent)
            if usage != self._usage.get(instance_id):
                self._usage[instance_id] = usage
                self._dirty.add(instance_id)
        memory = psutil.virtual_memory()
        self._host_usage = {
            "cpu_cores": psutil.cpu_percent(None) / 100 * (psutil.cpu_count() or 1),
            "memory_bytes": float(memory.total - memory.available),
        }
        if self._dirty:
            self._signal.set()

    def last_activity(self, instance_id: str) -> float | None:
        """When the data plane last sent the instance a request (the GC's activity)."""
        record = self._records.find(instance_id)
        if record is None or self.plane is None:
            return None
        return self.plane.last_activity(plane_unit(record.spec.apartment, record.spec.unit),
                                        instance_id)

    # -- AgentEndpoint: commands, and what they report back (ChangeSink) ------------------
    def output(self, command: ReadLogs | ExecStream) -> AsyncIterator[OutputPiece]:
        if isinstance(command, ReadLogs):
            return self.service.output_of(command.instance_id, LogsSource(
                command.follow, command.since, command.tail))
        return self.service.output_of(command.instance_id, ExecSource(
            command.argv, check_timeout(command)))

    async def execute(self, command: AgentCommand) -> CommandResult | None:
        clock, ok = self.service.clock, False
        started = clock.monotonic()
        try:
            result = await self.commands.execute(command)
            ok = result is None or result.ok
            return result
        finally:
            self.command_timed(COMMAND_KINDS.get(type(command), "unknown"), ok,
                               clock.monotonic() - started)

    def touched(self, instance_id: str) -> None:
        self._dirty.add(instance_id)
        self._signal.set()

    def add_event(self, event: ReportedEvent) -> None:
        if event.instance_id and event.apartment:
            self._apartments.setdefault(event.instance_id, event.apartment)
        self._events.append(event)
        self._signal.set()
