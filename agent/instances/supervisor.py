"""Instance supervision: launch containers, drive the lifecycle, health-check, stop.

Every state change goes through ``move()``, which validates it against the table in
``common.lifecycle``, persists the record and publishes an event. Failures detected here
(container exits, failed health, startup timeouts) go to a ``FailureHandler``
(``agent.instances.recovery.Recovery``: it imports this module, not the reverse). Others
read the records through ``records`` (``agent.instances.records.InstanceRecords``);
pause and resume are in ``agent.instances.pausing``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.config import AgentConfig
from agent.instances.container_config import build_create_request, static_enforcement
from agent.instances.events import AgentEvent, EventBus, EventType
from agent.instances.failures import FailureHandler
from agent.instances.health import HealthTracker, Verdict, command_probe, http_probe
from agent.instances.image_pulls import ImagePuller
from agent.instances.records import RecordTable
from agent.instances.run_as import chosen_user, give_state_dir
from agent.instances.spares import Spares
from agent.instances.spec import InstanceSpec, InstanceView, StateMode
from agent.instances.store import InstanceRecord, RecordStore
from agent.limits.bandwidth import EgressShaper
from agent.runtime.protocol import ContainerEvent, ContainerRuntime
from common.clock import Clock
from common.errors import Conflict, LandlordError, NotFound
from common.lifecycle import InstanceState, LifecycleRecord

__all__ = ["Prober", "Supervisor"]

S = InstanceState
Prober = Callable[[str, int, str, float], Awaitable[bool]]


class Supervisor:
    """Owns the instance records of this host and the containers behind them."""

    failures: FailureHandler
    """Set once by ``AgentService``: recovery needs the supervisor built first."""

    def __init__(
        self,
        config: AgentConfig,
        runtime: ContainerRuntime,
        store: RecordStore,
        bus: EventBus,
        clock: Clock,
        shaper: EgressShaper | None = None,
        storage_mode: str = "eviction",
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.store = store
        self.bus = bus
        self.clock = clock
        self.shaper = shaper
        self.storage_mode = storage_mode
        self.records = RecordTable()
        self.images = ImagePuller(runtime, bus, clock, config.registry_auth_file,
                                  config.image_pull_timeout)
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.probe: Prober = http_probe
        self.launch_hooks: list[Callable[[InstanceSpec], None]] = []
        self.activity_source: Callable[[str], float | None] | None = None
        self.spares = Spares(runtime, self.records, self.create_container,
                             config.spare_containers)

    # -- bookkeeping -----------------------------------------------------------------
    def lock(self, instance_id: str) -> asyncio.Lock:
        return self.locks.setdefault(instance_id, asyncio.Lock())
    def publish(self, record: InstanceRecord, event_type: str, **details: object) -> None:
        spec = record.spec
        self.bus.publish(AgentEvent(event_type, spec.instance_id, spec.unit, spec.version,
                                    self.clock.now(), details))

    def save(self, record: InstanceRecord) -> None:
        self.store.save(record)

    def move(self, record: InstanceRecord, to: InstanceState, reason: str) -> None:
        """Validated transition, persisted, published."""
        moved = record.lifecycle.transition(to, reason, self.clock.now())
        self.save(record)
        self.publish(record, EventType.STATE, reason=reason,
                     **{"from": moved.from_state, "to": moved.to_state})

    def settle_failed(self, record: InstanceRecord, reason: str) -> None:
        """Bring a record whose container died to ERROR (READY can only go to STOPPED)."""
        state = record.lifecycle.state
        if state in (S.ERROR, S.STOPPED):
            return
        if state is S.READY:
            self.move(record, S.STOPPED, reason)
        elif state is S.PAUSED:
            self.move(record, S.STOPPING, reason)
            self.move(record, S.ERROR, reason)
        else:
            self.move(record, S.ERROR, reason)

    def settle_stopped(self, record: InstanceRecord, reason: str) -> None:
        """Walk the record to STOPPED along allowed transitions."""
        state = record.lifecycle.state
        if state in (S.RUNNING, S.PAUSED):
            self.move(record, S.STOPPING, reason)
        elif state in (S.INITIALIZING, S.CREATED):
            self.move(record, S.ERROR, reason)
        if record.lifecycle.state in (S.STOPPING, S.READY, S.ERROR):
            self.move(record, S.STOPPED, reason)

    def state_host_dir(self, spec: InstanceSpec) -> Path | None:
        base = self.config.data_dir / "state" / spec.apartment / spec.unit
        if spec.state_mode is StateMode.SHARED:
            return base / "_shared"
        if spec.state_mode is StateMode.SNAPSHOT:
            return base / spec.instance_id
        return None

    def address(self) -> str:
        return self.config.advertise_address

    def view(self, record: InstanceRecord) -> InstanceView:
        spec, life = record.spec, record.lifecycle
        return InstanceView(
            instance_id=spec.instance_id, apartment=spec.apartment, unit=spec.unit,
            version=spec.version, slot=spec.slot.value, state=life.state.value,
            health_score=life.health_score, address=self.address(), port=spec.port,
            container_id=record.container_id, generation=record.generation,
            restarts=record.total_restarts, started_at=life.started_at,
            last_activity=self.last_activity(record),
            enforcement=dict(record.enforcement), metadata=dict(life.metadata))

    def last_activity(self, record: InstanceRecord) -> float:
        """The later of the last request seen and the last state change."""
        seen = self.activity_source(record.instance_id) if self.activity_source else None
        return max(record.lifecycle.last_activity, record.last_request or 0.0, seen or 0.0)

    # -- start -----------------------------------------------------------------------
    async def start_instance(self, spec: InstanceSpec, wait: bool = True) -> InstanceView:
        existing = self.records.find(spec.instance_id)
        if existing is not None and existing.lifecycle.state not in (S.STOPPED, S.COLLECTED):
            raise Conflict(f"instance {spec.instance_id!r} already exists"
                           f" ({existing.lifecycle.state.value})", instance=spec.instance_id)
        holder = self.records.port_holder(spec.port, ignore=(spec.instance_id,))
        if holder is not None:
            raise Conflict(f"port {spec.port} is used by {holder.instance_id}", port=spec.port)
        record = InstanceRecord(spec, LifecycleRecord.new(
            spec.version, self.clock, {"apartment": spec.apartment, "unit": spec.unit}))
        self.records.add(record)
        self.save(record)  # intent first: an agent restarted now launches it
        self.expect_settle(spec.instance_id)
        async with self.lock(spec.instance_id):
            try:
                await self.launch(record, "start requested")
            except LandlordError as exc:
                self.settle_failed(record, f"launch failed: {exc}")
                raise
        if wait:
            await self.wait_settled(spec.instance_id, spec.health.startup_timeout + 5)
        return self.view(record)

    def expect_settle(self, instance_id: str) -> asyncio.Event:
        """A fresh "settled" event (set once it runs healthy, is escalated or removed)."""
        event = self._ready[instance_id] = asyncio.Event()
        return event

    async def wait_settled(self, instance_id: str, timeout: float,
                           event: asyncio.Event | None = None) -> None:
        """Until the instance is ready/running or its start failed (or ``timeout``)."""
        event = event or self._ready.setdefault(instance_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    def settle_waiters(self, instance_id: str) -> None:
        self._ready.setdefault(instance_id, asyncio.Event()).set()

    async def launch(self, record: InstanceRecord, reason: str) -> None:
        """Start a new container (next generation, its spare when one fits) for ``record``."""
        spec = record.spec
        record.generation += 1
        container_id = await self.spares.take(record, record.generation) or \
            await self.create_container(record, record.generation)
        record.container_id = container_id
        self.records.bind(container_id, spec.instance_id)
        for hook in self.launch_hooks:
            hook(spec)
        record.enforcement = static_enforcement(spec, self.storage_mode)
        if record.lifecycle.state is S.READY:
            self.move(record, S.STOPPED, reason)
        self.move(record, S.INITIALIZING, reason)
        started = self.clock.monotonic()
        await self.runtime.start(container_id)
        await self.apply_network(record)
        self.save(record)
        self.watch(record, started)

    async def create_container(self, record: InstanceRecord, generation: int) -> str:
        """Create (not start) ``record``'s container of ``generation``, its state directory
        given to the container's user; the image pulled first when this host lacks it."""
        spec = record.spec
        image = await self.images.ensure(spec)
        state_dir = self.state_host_dir(spec)
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
        request = build_create_request(
            spec, host_id=self.config.host_id, advertise_address=self.address(),
            generation=generation, state_host_dir=state_dir,
            extra_labels=self.config.label_map, hard_storage_quota=self.storage_mode == "quota",
            bridge_network=self.config.bridge_network,
            user=chosen_user(image.user, spec.run_as_root))
        try:
            container_id = await self.runtime.create(request)
        except Conflict:  # a half-done launch left the name behind: it is ours to remove
            await self.runtime.remove(request.name, force=True)
            container_id = await self.runtime.create(request)
        if state_dir is not None:  # the instance's user owns its state directory
            try:
                await give_state_dir(self.runtime, container_id, request.user, state_dir)
            except Exception:
                await self.runtime.remove(container_id, force=True)
                raise
        return container_id

    async def apply_network(self, record: InstanceRecord) -> None:
        rate = record.spec.resources.network
        if not rate or record.container_id is None:
            return
        if self.shaper is None or not self.config.bandwidth:
            record.enforcement["network"] = "not enforced: shaping disabled on this agent"
            self.publish(record, EventType.LIMIT_NOT_ENFORCED, resource="network",
                         reason=record.enforcement["network"])
            return
        info = await self.runtime.inspect(record.container_id)
        shaper = self.shaper
        if record.classid is None:
            used = {r.classid for r in self.records.all() if r.classid is not None}
            record.classid = await asyncio.to_thread(shaper.claim, used, record.instance_id)
        result = await asyncio.to_thread(shaper.apply, info.id, info.pid, record.classid, rate)
        record.enforcement["network"] = result.detail
        if not result.enforced:
            self.publish(record, EventType.LIMIT_NOT_ENFORCED, resource="network",
                         reason=result.detail)

    # -- health ----------------------------------------------------------------------
    def watch(self, record: InstanceRecord, started: float) -> None:
        old = self._watchers.pop(record.instance_id, None)
        if old is not None and old is not asyncio.current_task():
            old.cancel()
        self._watchers[record.instance_id] = asyncio.create_task(
            self._watch(record, record.generation, started),
            name=f"health-{record.instance_id}")

    def unwatch(self, instance_id: str) -> None:
        task = self._watchers.pop(instance_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _watch(self, record: InstanceRecord, generation: int, started: float) -> None:
        spec = record.spec
        tracker = HealthTracker(spec.health, started)
        if record.lifecycle.state in (S.RUNNING, S.READY):  # adopted healthy instance
            tracker.healthy = tracker.ever_healthy = True
        container_id = record.container_id
        deadline = started + spec.health.warmup + spec.health.startup_timeout
        while record.generation == generation:
            if spec.health.command:
                ok = await command_probe(self.runtime, container_id, spec.health.command,
                                         spec.health.timeout)
            else:
                ok = await self.probe(self.address(), spec.port, spec.health.path,
                                      spec.health.timeout)
            if record.generation != generation or container_id != record.container_id:
                return
            now = self.clock.monotonic()
            verdict = tracker.observe(bool(ok), now)
            record.lifecycle.health_score = tracker.score
            if verdict is Verdict.BECAME_HEALTHY:
                await self._on_healthy(record)
            elif verdict is Verdict.BECAME_UNHEALTHY:
                self.publish(record, EventType.HEALTH, healthy=False, score=tracker.score)
                await self.failures.on_failure(
                    record, container_id,
                    f"unhealthy: {tracker.failures} failed health checks in a row")
                return
            elif tracker.healthy:
                self.failures.note_healthy(record)
            if not tracker.healthy and now > deadline:
                await self.failures.on_failure(
                    record, container_id,
                    f"not ready within {spec.health.startup_timeout:g} s of warm-up end")
                return
            interval = spec.health.interval if tracker.healthy else min(
                spec.health.interval, self.config.startup_probe_interval)
            await asyncio.sleep(interval)

    async def _on_healthy(self, record: InstanceRecord) -> None:
        self.publish(record, EventType.HEALTH, healthy=True,
                     score=record.lifecycle.health_score)
        if record.lifecycle.state is S.INITIALIZING:
            self.move(record, S.READY, "health checks passed after warm-up")
        if record.lifecycle.state is S.READY:
            self.move(record, S.RUNNING, "serving")
        self.failures.on_healthy(record)
        self.settle_waiters(record.instance_id)
        self.spares.prepare(record)

    # -- container events ------------------------------------------------------------
    async def handle_event(self, event: ContainerEvent) -> None:
        if event.action != "die":
            return
        record = self.records.crashed_instance(event.container_id)
        if record is not None:
            await self.failures.on_container_exit(record, event.container_id, event.exit_code)

    # -- stop ------------------------------------------------------------------------
    async def stop_container(self, record: InstanceRecord, grace: float) -> None:
        """Stop the current container on purpose (SIGTERM, ``grace`` s, SIGKILL)."""
        container_id = record.container_id
        if container_id is None:
            return
        self.records.expect_exit(container_id)
        self.unwatch(record.instance_id)
        with contextlib.suppress(NotFound):
            await self.runtime.stop(container_id, grace)

    async def release(self, record: InstanceRecord, remove_container: bool = True) -> None:
        """Free what the current container holds: egress class, the container itself (and
        the instance's spare)."""
        container_id = record.container_id
        if record.classid is not None and self.shaper is not None:
            await asyncio.to_thread(self.shaper.release, container_id, record.classid)
        if remove_container and container_id is not None:
            await self.runtime.remove(container_id, force=True)
            self.records.unbind(container_id)
        if remove_container:
            await self.spares.drop(record.instance_id)

    async def stop_instance(self, instance_id: str, grace: float | None = None,
                            reason: str = "stop requested") -> None:
        """Graceful stop, resources released, container and record removed."""
        record = self.records.get(instance_id)
        self.failures.cancel(instance_id)
        async with self.lock(instance_id):
            if record.lifecycle.state is S.PAUSED and record.container_id:
                with contextlib.suppress(LandlordError):  # thawed, so SIGTERM is handled
                    await self.runtime.unpause(record.container_id)
            if record.lifecycle.state in (S.RUNNING, S.PAUSED):
                self.move(record, S.STOPPING, reason)
            await self.stop_container(record, self.config.stop_grace if grace is None
                                      else grace)
            self.settle_stopped(record, reason)
            await self.release(record)
            self.forget(record, reason)

    async def evict(self, record: InstanceRecord, reason: str, usage: int, limit: int) -> None:
        """Over its storage limit: stop it, remove its writable layer, keep the record
        (stopped, metadata ``evicted``) so the coordinator sees why."""
        async with self.lock(record.instance_id):
            if record.lifecycle.state is not S.RUNNING:
                return
            self.publish(record, EventType.LIMIT_EXCEEDED, resource="storage", usage=usage,
                         limit=limit, action="evicted")
            self.move(record, S.STOPPING, f"evicted: {reason}")
            await self.stop_container(record, self.config.stop_grace)
            self.move(record, S.STOPPED, f"evicted: {reason}")
            await self.release(record)
            record.lifecycle.metadata["evicted"] = reason
            self.save(record)
            self.publish(record, EventType.EVICTED, reason=reason, usage=usage, limit=limit)

    def forget(self, record: InstanceRecord, reason: str) -> None:
        self.unwatch(record.instance_id)
        self.records.discard(record.instance_id)
        self.store.delete(record.instance_id)
        self.settle_waiters(record.instance_id)
        self.publish(record, EventType.REMOVED, reason=reason)

    async def shutdown(self) -> None:
        """Stop watching; containers keep running (the agent is not their parent)."""
        self.failures.cancel_all()
        tasks = [*self._watchers.values(), *self.images.cancel()]
        self._watchers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
