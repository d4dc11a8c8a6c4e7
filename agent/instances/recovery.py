"""Crash and memory-leak recovery, deciding with ``common.recovery`` and acting on Docker.

Crash (the container died, failed its health checks, or never became ready): a new
container (next generation, same instance id, same state directory bind-mounted; the
supervisor's pre-created spare when it has one) is started at once, and the crash dump is
read from the dead container once the replacement settled (at most ``DUMP_AFTER_S``
later); when the replacement passes its health check ``recovery.success`` and
``traffic.switch`` are published. Memory leak: a memory dump, then a graceful
restart. A failed try is retried with the policy's delays; past the retries, or in a crash
loop, the instance stays in ``error`` and ``recovery.escalated`` is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from agent.instances.dumps import DumpWriter
from agent.instances.events import EventType
from agent.instances.secret_env import redact_inspect
from agent.instances.store import InstanceRecord
from agent.instances.supervisor import Supervisor
from common.errors import Conflict, LandlordError, NotFound
from common.lifecycle import InstanceState
from common.recovery import (
    FailureKind,
    LeakAssessment,
    RecoveryAction,
    RecoveryDecision,
    decide_after_failed_attempt,
    decide_after_failure,
    record_healthy,
)

__all__ = ["Recovery"]

log = logging.getLogger(__name__)
S = InstanceState
REMOVE_AFTER_S = 30.0
"""Longest a crashed container waits for its replacement to settle before removal."""
DUMP_AFTER_S = 2.0
"""Longest a crash dump waits for the replacement to settle (off its critical path)."""


class Recovery:
    """Acts on failures of the supervisor's instances (its ``FailureHandler``), and on
    memory leaks the resource monitor finds."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.policy = supervisor.config.recovery_policy()
        self.dumps = DumpWriter(supervisor.config.data_dir)
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # -- health bookkeeping ------------------------------------------------------------
    def note_healthy(self, record: InstanceRecord) -> None:
        """A passing probe: let the incident count reset after a healthy stretch."""
        updated = record_healthy(self.policy, record.recovery, self.sup.clock.now())
        if updated != record.recovery:
            record.recovery = updated
            self.sup.save(record)

    def on_healthy(self, record: InstanceRecord) -> None:
        """The instance (re)became healthy: close an open incident as a success."""
        opened = record.recovery
        record.recovery = record_healthy(self.policy, opened, self.sup.clock.now())
        self.sup.save(record)
        if opened.kind is None:
            return
        previous = record.lifecycle.metadata.get("replaced_container", "")
        self.sup.publish(record, EventType.RECOVERY_SUCCESS, kind=opened.kind.value,
                         attempt=opened.failed_tries + 1, generation=record.generation,
                         container=record.container_id)
        self.sup.publish(record, EventType.TRAFFIC_SWITCH, reason=f"{opened.kind.value} recovery",
                         old_container=previous, new_container=record.container_id,
                         address=self.sup.address(), port=record.spec.port)

    # -- failures --------------------------------------------------------------------
    async def on_container_exit(self, record: InstanceRecord, container_id: str,
                                exit_code: int | None) -> None:
        """The container died without being asked to."""
        async with self.sup.lock(record.instance_id):
            if record.container_id != container_id or record.lifecycle.state in (
                    S.STOPPING, S.STOPPED):
                return
            info = None
            with contextlib.suppress(LandlordError):
                info = await self.sup.runtime.inspect(container_id)
            oom = bool(info and info.oom_killed)
            code = exit_code if exit_code is not None else (info.exit_code if info else None)
            reason = f"container exited with code {code}" + (" (OOM killed)" if oom else "")
            if oom:
                limit = record.spec.resources.memory
                self.sup.publish(record, EventType.LIMIT_EXCEEDED, resource="memory",
                                 usage=limit, limit=limit, action="oom_killed")
            await self._fail(record, container_id, reason, FailureKind.CONTAINER_CRASH, code,
                             oom)

    async def on_failure(self, record: InstanceRecord, container_id: str | None,
                         reason: str) -> None:
        """The container runs but is broken (unhealthy, never ready): kill and replace."""
        async with self.sup.lock(record.instance_id):
            if record.container_id != container_id:
                return
            if container_id is not None:
                self.sup.records.expect_exit(container_id)
                with contextlib.suppress(LandlordError):
                    await self.sup.runtime.kill(container_id)
            await self._fail(record, container_id, reason, FailureKind.CONTAINER_CRASH, None,
                             False)

    async def _fail(self, record: InstanceRecord, container_id: str | None, reason: str,
                    kind: FailureKind, exit_code: int | None, oom: bool) -> None:
        sup = self.sup
        sup.unwatch(record.instance_id)
        sup.settle_failed(record, reason)
        sup.publish(record, EventType.CRASHED, reason=reason, exit_code=exit_code,
                    oom_killed=oom, container=container_id, generation=record.generation)
        settled = sup.expect_settle(record.instance_id)
        if container_id is not None:
            self.spawn(self._dump_and_remove(record, container_id, record.generation, reason,
                                             exit_code, oom, settled))
        now = sup.clock.now()
        opened = record.recovery
        if opened.kind is not None:  # the last try of an open incident failed
            decision = decide_after_failed_attempt(self.policy, opened, now)
            sup.publish(record, EventType.RECOVERY_FAILURE, kind=opened.kind.value,
                        attempt=opened.failed_tries + 1, reason=reason,
                        final=decision.action is RecoveryAction.ESCALATE)
        else:
            decision = decide_after_failure(self.policy, opened, kind, now)
        record.recovery = decision.state
        record.lifecycle.metadata["replaced_container"] = container_id or ""
        sup.save(record)
        self._act(record, decision, failure_published=opened.kind is not None)

    def _act(self, record: InstanceRecord, decision: RecoveryDecision,
             failure_published: bool = False) -> None:
        sup = self.sup
        kind = decision.state.kind.value if decision.state.kind else "unknown"
        if decision.action is RecoveryAction.ESCALATE:
            record.lifecycle.metadata["escalated"] = decision.reason
            sup.save(record)
            if not failure_published:  # a crash loop: escalated on a new incident
                sup.publish(record, EventType.RECOVERY_FAILURE, kind=kind,
                            attempt=decision.attempt, reason=decision.reason, final=True)
            sup.publish(record, EventType.ESCALATION, kind=kind, reason=decision.reason,
                        incidents=decision.state.incidents, state=record.lifecycle.state.value)
            sup.settle_waiters(record.instance_id)
            return
        sup.publish(record, EventType.RECOVERY_ATTEMPT, kind=kind, attempt=decision.attempt,
                    delay=decision.delay_s, reason=decision.reason)
        self.cancel(record.instance_id)
        self._pending[record.instance_id] = asyncio.create_task(
            self._retry(record, decision), name=f"recover-{record.instance_id}")

    async def _retry(self, record: InstanceRecord, decision: RecoveryDecision) -> None:
        await asyncio.sleep(decision.delay_s)
        sup = self.sup
        async with sup.lock(record.instance_id):
            if sup.records.find(record.instance_id) is not record or \
                    record.lifecycle.state not in (S.ERROR, S.STOPPED):
                return
            self._pending.pop(record.instance_id, None)
            record.total_restarts += 1
            try:
                await sup.launch(record, f"recovery: {decision.reason}")
                return
            except LandlordError as exc:
                reason = f"relaunch failed: {exc}"
                sup.settle_failed(record, reason)
            await self._fail(record, None, reason,
                             record.recovery.kind or FailureKind.CONTAINER_CRASH, None, False)

    async def _dump_and_remove(self, record: InstanceRecord, container_id: str, generation: int,
                               reason: str, exit_code: int | None, oom: bool,
                               settled: asyncio.Event) -> None:
        sup = self.sup
        crashed_at = sup.clock.now()
        # reading the dead container (kept until removal) is engine work that competes with
        # the replacement's start: wait for that to settle first (a crash loop: a moment)
        await sup.wait_settled(record.instance_id, DUMP_AFTER_S, settled)
        logs = ""
        inspect: dict[str, Any] = {}
        with contextlib.suppress(LandlordError):
            logs = await sup.runtime.logs(container_id, sup.config.log_tail)
        with contextlib.suppress(LandlordError):
            inspect = redact_inspect((await sup.runtime.inspect(container_id)).raw,
                                     record.spec.secret_env)
        path = await asyncio.to_thread(
            self.dumps.write_crash, record.instance_id, generation, crashed_at,
            exit_code=exit_code, oom_killed=oom, reason=reason, logs=logs, inspect=inspect)
        sup.publish(record, EventType.CRASH_DUMP, path=str(path), exit_code=exit_code,
                    oom_killed=oom, generation=generation)
        # removing a container is heavy engine work: leave it until the replacement is up
        await sup.wait_settled(record.instance_id, REMOVE_AFTER_S, settled)
        with contextlib.suppress(NotFound, Conflict):  # Conflict: a removal is under way
            await sup.runtime.remove(container_id, force=True)
        if sup.shaper is not None:
            await asyncio.to_thread(sup.shaper.forget_container, container_id)
        sup.records.unbind(container_id)

    # -- memory leak -----------------------------------------------------------------
    async def on_leak(self, record: InstanceRecord, assessment: LeakAssessment, pid: int,
                      memory_dir: Path | None, samples: Sequence[tuple[float, int]]) -> None:
        sup = self.sup
        async with sup.lock(record.instance_id):
            if record.lifecycle.state is not S.RUNNING or record.recovery.kind is not None:
                return
            sup.publish(record, EventType.MEMORY_LEAK, reason=assessment.reason,
                        slope_bytes_per_s=assessment.slope_bytes_per_s,
                        projected_s=assessment.projected_s)
            path = await asyncio.to_thread(
                self.dumps.write_memory, record.instance_id, record.generation,
                sup.clock.now(), pid=pid, cgroup_memory_dir=memory_dir, samples=samples,
                reason=assessment.reason)
            sup.publish(record, EventType.MEMORY_DUMP, path=str(path), pid=pid,
                        generation=record.generation)
            decision = decide_after_failure(self.policy, record.recovery,
                                            FailureKind.MEMORY_LEAK, sup.clock.now())
            record.recovery = decision.state
            record.lifecycle.metadata["replaced_container"] = record.container_id or ""
            sup.expect_settle(record.instance_id)
            sup.move(record, S.STOPPING, f"memory leak: {assessment.reason}")
            await sup.stop_container(record, sup.config.stop_grace)
            sup.move(record, S.STOPPED, "stopped for a memory-leak restart")
            old = record.container_id
            if old is not None:
                await sup.runtime.remove(old, force=True)
                sup.records.unbind(old)
            self._act(record, decision)

    def resume(self, record: InstanceRecord) -> None:
        """Retry an incident a previous agent left open (it died while waiting)."""
        self._act(record, RecoveryDecision(
            RecoveryAction.RETRY, 0.0, record.recovery.failed_tries + 1,
            "retry resumed after an agent restart", record.recovery))

    # -- tasks -------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recovery task failed: %r", task.exception())

    def cancel(self, instance_id: str) -> None:
        task = self._pending.pop(instance_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def cancel_all(self) -> None:
        """Agent shutdown: drop pending retries and dumps (a crashed container left behind
        is a stopped landlord container, collected by the cache GC)."""
        for instance_id in list(self._pending):
            self.cancel(instance_id)
        for task in list(self._background):
            task.cancel()
