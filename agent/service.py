"""AgentService: the agent's internal interface.

The coordinator stream and the data plane plug in here: start and stop instances, list
them, follow events, trigger GC, read capacity, and feed request activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import psutil

from agent.config import AgentConfig
from agent.gc.collector import DiskUsage, GarbageCollector
from agent.instances.adoption import AdoptionReport, adopt
from agent.instances.container_config import LABEL_HOST
from agent.instances.events import EventBus
from agent.instances.pausing import pause_instance, resume_instance
from agent.instances.records import InstanceRecords
from agent.instances.recovery import Recovery
from agent.instances.resource_monitor import ResourceMonitor
from agent.instances.spec import InstanceSpec, InstanceView
from agent.instances.store import RecordStore
from agent.instances.supervisor import Prober, Supervisor
from agent.limits.bandwidth import EgressShaper
from agent.limits.storage import enforcement_mode
from agent.runtime.protocol import (
    EXEC_OUTPUT_CAP,
    ContainerRuntime,
    ExecResult,
    ExecSource,
    LogsSource,
    OutputPiece,
)
from common.clock import Clock, SystemClock
from common.errors import FailedPrecondition, InvalidArgument, LandlordError
from common.gc_kinds import GcKind
from common.lifecycle import InstanceState
from common.resources import Resources

__all__ = ["AgentService"]

log = logging.getLogger(__name__)


class AgentService:
    """One host's agent: supervision, limits, recovery and GC behind one interface."""

    def __init__(
        self,
        config: AgentConfig,
        runtime: ContainerRuntime,
        clock: Clock | None = None,
        *,
        prober: Prober | None = None,
        disk_usage: DiskUsage | None = None,
        shaper: EgressShaper | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.clock = clock or SystemClock()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.bus = EventBus()
        self.store = RecordStore(config.data_dir)
        if shaper is None and config.bandwidth:
            shaper = EgressShaper(config.egress_device, config.cgroup_root, config.run_dir,
                                  config.host_id)
        self.supervisor = Supervisor(config, runtime, self.store, self.bus, self.clock, shaper)
        self.recovery = self.supervisor.failures = Recovery(self.supervisor)
        if prober is not None:
            self.supervisor.probe = prober
        self.monitor = ResourceMonitor(self.supervisor, self.recovery)
        self.gc = GarbageCollector(self.supervisor, self.monitor, disk_usage)
        self.supervisor.launch_hooks.append(self.gc.remember)
        self._events_task: asyncio.Task[None] | None = None
        self.adoption: AdoptionReport | None = None
        self._closed = False

    # -- life of the service -------------------------------------------------------------
    async def open(self) -> AdoptionReport:
        """Learn the engine's storage abilities, follow its events, adopt what runs."""
        info = await self.runtime.info()
        self.supervisor.storage_mode = enforcement_mode(info)
        cfg = self.config
        try:  # bridged instances need it; host-network ones run without it
            await self.runtime.ensure_network(cfg.bridge_network, cfg.bridge_subnet,
                                              cfg.bridge_interface)
        except LandlordError as exc:
            log.error("bridged instances cannot start on this host: %s", exc)
        ready = asyncio.Event()
        self._events_task = asyncio.create_task(self._follow_events(ready), name="events")
        await ready.wait()
        containers = await self.runtime.list_containers({LABEL_HOST: self.config.host_id})
        self.adoption = await adopt(self.supervisor, self.recovery, containers)
        return self.adoption

    async def _follow_events(self, ready: asyncio.Event) -> None:
        stream = self.runtime.events({LABEL_HOST: self.config.host_id})
        ready.set()
        async for event in stream:
            try:
                await self.supervisor.handle_event(event)
            except (LandlordError, OSError) as exc:
                log.error("handling %s of %s failed: %s", event.action,
                          event.container_id[:12], exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Monitoring, storage checks and GC schedules until ``stop`` is set."""
        await asyncio.gather(
            self._every(self.config.monitor_interval, self.monitor.sample_once, stop),
            self._every(self.config.storage_interval, self.monitor.check_storage_once, stop),
            self.gc.run(stop),
        )

    async def _every(self, interval: float, step: Callable[[], Any], stop: asyncio.Event
                     ) -> None:
        while not stop.is_set():
            try:
                await step()
            except (LandlordError, OSError) as exc:
                log.error("%s failed: %s", getattr(step, "__name__", step), exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def close(self) -> None:
        """Stop following and watching; containers keep running. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.supervisor.shutdown()
        if self._events_task is not None:
            self._events_task.cancel()
            await asyncio.gather(self._events_task, return_exceptions=True)
        self.bus.close()
        await self.runtime.close()

    # -- the interface -------------------------------------------------------------------
    async def start_instance(self, spec: InstanceSpec, wait: bool = True) -> InstanceView:
        """Create, start and health-check an instance; with ``wait`` return once it is
        running or its start failed (see the view's state)."""
        return await self.supervisor.start_instance(spec, wait=wait)

    async def stop_instance(self, instance_id: str, grace: float | None = None) -> None:
        """SIGTERM, ``grace`` seconds (default from config), SIGKILL; then remove."""
        await self.supervisor.stop_instance(instance_id, grace)

    async def pause_instance(self, instance_id: str) -> bool:
        """Freeze a running instance, memory and state kept (False: already paused)."""
        return await pause_instance(self.supervisor, instance_id)

    async def resume_instance(self, instance_id: str) -> bool:
        """Thaw a paused instance: same process (False: it was not paused)."""
        return await resume_instance(self.supervisor, instance_id)

    def instances(self) -> list[InstanceView]:
        return [self.supervisor.view(r) for r in self.records.all()]

    def instance(self, instance_id: str) -> InstanceView:
        return self.supervisor.view(self.records.get(instance_id))

    @property
    def records(self) -> InstanceRecords:
        """This host's instance records, to read."""
        return self.supervisor.records

    async def run_gc(self, kind: GcKind | str) -> dict[str, Any]:
        """Run one GC kind now: "unused", "memory", "cache" (or "all")."""
        if kind == "all":
            return {k: await self.gc.run_kind(k) for k in GcKind}
        return await self.gc.run_kind(kind)

    def capacity(self) -> dict[str, Any]:
        """Totals, reserved, allocated (live instances) and available, per dimension."""
        config = self.config
        disk = shutil.disk_usage(config.data_dir)
        total = Resources(cpu=float(psutil.cpu_count() or 1),
                          memory=psutil.virtual_memory().total,
                          storage=disk.total, network=config.network_capacity)
        reserved = Resources(cpu=config.reserved_cpu, memory=config.reserved_memory,
                             storage=config.reserved_storage, network=0)
        allocated = Resources()
        live = 0
        for record in self.records.all():
            if record.lifecycle.state in (InstanceState.STOPPED, InstanceState.COLLECTED):
                continue
            live += 1
            res = record.spec.resources
            allocated = allocated + Resources(cpu=res.cpu, memory=res.memory,
                                              storage=res.storage, network=res.network)
        available = total.minus(reserved).minus(allocated)
        return {"host": config.host_id, "building": config.building,
                "total": total.to_dict(), "reserved": reserved.to_dict(),
                "allocated": allocated.to_dict(), "available": available.to_dict(),
                "instances": live}

    def record_request(self, instance_id: str, at: float | None = None) -> None:
        """The data plane saw a request for the instance (at ``at``, default now)."""
        record = self.records.get(instance_id)
        when = self.clock.now() if at is None else at
        record.last_request = max(record.last_request or 0.0, when)

    def set_activity_source(self, source: Callable[[str], float | None]) -> None:
        """Inject where last-request times come from (instance id -> epoch or None)."""
        self.supervisor.activity_source = source

    def set_stable_version(self, apartment: str, unit: str, version: str | None) -> None:
        """The unit's stable version on this host: never collected as idle."""
        if version is not None and not version:
            raise InvalidArgument("version must be non-empty or None")
        self.gc.set_stable(apartment, unit, version)

    async def exec_in_instance(self, instance_id: str, argv: Sequence[str], timeout: float,
                               max_output: int = EXEC_OUTPUT_CAP) -> ExecResult:
        """Run ``argv`` inside the instance's container (see ``ContainerRuntime.exec``).

        Raises NotFound for an instance this host does not run and FailedPrecondition for
        one that is not up (only ready and running instances take commands)."""
        record = self.records.get(instance_id)
        state = record.lifecycle.state
        if state not in (InstanceState.READY, InstanceState.RUNNING) \
                or record.container_id is None:
            raise FailedPrecondition(f"instance {instance_id} is {state.value}: it must be "
                                     "running to run a command in it", instance=instance_id)
        return await self.runtime.exec(record.container_id, argv, timeout, max_output)

    def output_of(self, instance_id: str, source: LogsSource | ExecSource
                  ) -> AsyncIterator[OutputPiece]:
        """The instance's logs (its current container's, whatever its state) or a command's
        output (running instances only). Raises NotFound for an instance this host does
        not run and FailedPrecondition for one without the container it needs."""
        record = self.records.get(instance_id)
        state = record.lifecycle.state
        if record.container_id is None or (
                isinstance(source, ExecSource)
                and state not in (InstanceState.READY, InstanceState.RUNNING)):
            raise FailedPrecondition(f"instance {instance_id} is {state.value}: it has no "
                                     "container to read" if record.container_id is None else
                                     f"instance {instance_id} is {state.value}: it must be "
                                     "running to run a command in it", instance=instance_id)
        return self.runtime.output(record.container_id, source)

    def stats(self, instance_id: str) -> dict[str, Any]:
        """Latest sampled figures of one instance (memory, cpu, pids, io, storage)."""
        self.records.get(instance_id)
        return self.monitor.figures(instance_id)
