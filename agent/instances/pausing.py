"""Pause and resume an instance: freeze its container (Docker pause, the cgroup freezer),
memory and state kept, and thaw it without a restart (same process, same memory).

The record says what the container must be: ``paused`` is written first (intent), then the
container is frozen; ``running`` is written first, then it is thawed. A restarted agent finds
the container as Docker left it and makes it match the record (``align_container``).

While an instance is paused nothing checks or repairs it: its health watch is stopped (a
frozen process fails every probe), crash recovery, the leak detector, storage eviction and
idle collection act on running instances only (agent/gc/plan.py: ``COLLECTABLE_STATES``).
Its capacity stays reserved on the host.
"""

from __future__ import annotations

import logging

from agent.instances.events import EventType
from agent.instances.store import InstanceRecord
from agent.instances.supervisor import Supervisor
from agent.runtime.protocol import ContainerInfo
from common.errors import FailedPrecondition, LandlordError
from common.lifecycle import InstanceState

__all__ = ["PAUSED_STATUS", "align_container", "pause_instance", "resume_instance"]

log = logging.getLogger(__name__)

S = InstanceState
PAUSED_STATUS = "paused"
"""Docker's status of a frozen container."""


async def pause_instance(sup: Supervisor, instance_id: str,
                         reason: str = "paused by an operator") -> bool:
    """Freeze a running instance; False when it already is paused (a repeated command)."""
    record = sup.records.get(instance_id)
    async with sup.lock(instance_id):
        state = record.lifecycle.state
        if state is S.PAUSED:
            return False
        if state is not S.RUNNING or record.container_id is None:
            raise FailedPrecondition(f"instance {instance_id} is {state.value}: only a running "
                                     "instance can be paused", instance=instance_id)
        sup.unwatch(instance_id)  # a frozen process fails every probe
        sup.move(record, S.PAUSED, reason)
        try:
            await sup.runtime.pause(record.container_id)
        except LandlordError as exc:
            sup.move(record, S.RUNNING, f"pause failed: {exc}")
            sup.watch(record, sup.clock.monotonic())
            raise
        sup.publish(record, EventType.PAUSED, container=record.container_id, reason=reason)
        return True


async def resume_instance(sup: Supervisor, instance_id: str,
                          reason: str = "resumed by an operator") -> bool:
    """Thaw a paused instance; False when it is not paused (nothing to do)."""
    record = sup.records.get(instance_id)
    async with sup.lock(instance_id):
        if record.lifecycle.state is not S.PAUSED or record.container_id is None:
            return False
        sup.move(record, S.RUNNING, reason)
        await _thaw(sup, record)
        sup.publish(record, EventType.RESUMED, container=record.container_id, reason=reason)
        return True


async def _thaw(sup: Supervisor, record: InstanceRecord) -> None:
    assert record.container_id is not None
    info = await sup.runtime.inspect(record.container_id)
    if info.status == PAUSED_STATUS:
        await sup.runtime.unpause(record.container_id)
    # running again: probes start from healthy (it was healthy when frozen); a failure
    # from here on goes to recovery as for any running instance
    sup.watch(record, sup.clock.monotonic())


async def align_container(sup: Supervisor, record: InstanceRecord,
                          info: ContainerInfo) -> None:
    """After an agent restart: freeze or thaw the container to match the record (the agent
    may have stopped between writing the record and acting on the container)."""
    paused = info.status == PAUSED_STATUS
    if record.lifecycle.state is S.PAUSED and not paused:
        log.info("instance %s is paused but its container runs; freezing it",
                 record.instance_id)
        await sup.runtime.pause(info.id)
    elif record.lifecycle.state is not S.PAUSED and paused:
        log.info("instance %s is %s but its container is frozen; thawing it",
                 record.instance_id, record.lifecycle.state.value)
        await sup.runtime.unpause(info.id)

