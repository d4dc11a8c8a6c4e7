"""At start: adopt the containers a previous agent left running, and finish what it left
half-done. Nothing healthy is restarted.

The records in the data directory say what the agent meant; the containers (found by
their ``landlord.host`` label) say what is. For each record:

- its container runs: adopt it; health checks resume (a running instance is assumed
  healthy until its checks say otherwise), egress shaping is re-applied;
- its container is gone or exited while the record says it was up: a crash that happened
  while no agent watched, handed to recovery;
- created but never launched: launch; stopping: finish the stop; an open recovery
  incident with no container: retry it.

A running container with no record is rebuilt from its ``landlord.spec`` label.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from agent.instances.container_config import LABEL_INSTANCE, LABEL_SPEC
from agent.instances.events import EventType
from agent.instances.pausing import align_container
from agent.instances.records import LIVE_STATES
from agent.instances.recovery import Recovery
from agent.instances.secret_env import restore_secrets
from agent.instances.spec import InstanceSpec
from agent.instances.store import InstanceRecord
from agent.instances.supervisor import Supervisor
from agent.runtime.protocol import ContainerInfo
from common.errors import LandlordError
from common.lifecycle import InstanceState, LifecycleRecord

__all__ = ["AdoptionReport", "adopt"]

log = logging.getLogger(__name__)
S = InstanceState


@dataclass
class AdoptionReport:
    adopted: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    launched: list[str] = field(default_factory=list)
    finished_stops: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    strays_removed: list[str] = field(default_factory=list)


async def adopt(sup: Supervisor, recovery: Recovery,
                containers: list[ContainerInfo]) -> AdoptionReport:
    """Rebuild the supervisor's state from ``containers`` (this host's) and the records."""
    report = AdoptionReport()
    by_id = {c.id: c for c in containers}
    for record in sup.store.load_all():
        sup.records.add(record)
    for record in sup.records.all():
        info = by_id.get(record.container_id or "")
        if info is not None:
            sup.records.bind(info.id, record.instance_id)
        try:
            await _adopt_one(sup, recovery, record, info, report)
        except LandlordError as exc:
            log.error("adopting %s failed: %s", record.instance_id, exc)
    referenced = {r.container_id for r in sup.records.all()}
    for info in containers:
        if info.id in referenced:
            continue
        instance_id = info.labels.get(LABEL_INSTANCE, "")
        if sup.records.find(instance_id) is not None:
            if info.running:  # an older generation still running next to the current one
                await sup.runtime.remove(info.id, force=True)
                report.strays_removed.append(info.id)
            continue
        if info.running and LABEL_SPEC in info.labels:
            await _rebuild(sup, info, report)
    if sup.shaper is not None:  # ifbs of instances gone while no agent ran
        kept = {r.classid for r in sup.records.all() if r.classid is not None}
        await asyncio.to_thread(sup.shaper.forget_orphans, kept)
    return report


async def _adopt_one(sup: Supervisor, recovery: Recovery, record: InstanceRecord,
                     info: ContainerInfo | None, report: AdoptionReport) -> None:
    state = record.lifecycle.state
    running = info is not None and info.running
    if running and state in LIVE_STATES:
        assert info is not None
        await align_container(sup, record, info)  # paused stays paused, the rest thawed
        await _resume(sup, record, report)
    elif running and state in (S.ERROR, S.STOPPED, S.CREATED) and \
            not record.lifecycle.metadata.get("escalated") and \
            not record.lifecycle.metadata.get("evicted"):
        # launched, but the agent died before it recorded initializing
        sup.move(record, S.INITIALIZING, "adopted a container launched before a restart")
        assert info is not None
        await align_container(sup, record, info)
        await _resume(sup, record, report)
    elif state in LIVE_STATES and record.container_id is not None:
        await recovery.on_container_exit(record, record.container_id,
                                         info.exit_code if info else None)
        report.recovered.append(record.instance_id)
    elif state is S.CREATED:
        async with sup.lock(record.instance_id):
            await sup.launch(record, "launch left undone by a previous agent")
        report.launched.append(record.instance_id)
    elif state is S.STOPPING:
        await sup.stop_instance(record.instance_id, reason="stop left undone by a restart")
        report.finished_stops.append(record.instance_id)
    elif state in (S.ERROR, S.STOPPED) and record.recovery.kind is not None and \
            not record.lifecycle.metadata.get("escalated"):
        recovery.resume(record)
        report.recovered.append(record.instance_id)


async def _resume(sup: Supervisor, record: InstanceRecord, report: AdoptionReport) -> None:
    if record.lifecycle.state is S.READY:
        sup.move(record, S.RUNNING, "adopted after an agent restart")
    await sup.apply_network(record)
    sup.save(record)
    if record.lifecycle.state is not S.PAUSED:  # a frozen process fails every probe
        sup.watch(record, sup.clock.monotonic())
    if record.lifecycle.state is S.RUNNING:  # its spare, if any, was the previous agent's
        sup.spares.prepare(record)
    sup.publish(record, EventType.ADOPTED, container=record.container_id,
                state=record.lifecycle.state.value, generation=record.generation)
    report.adopted.append(record.instance_id)


async def _rebuild(sup: Supervisor, info: ContainerInfo, report: AdoptionReport) -> None:
    try:
        spec = InstanceSpec.from_dict(json.loads(info.labels[LABEL_SPEC]))
        if spec.secret_env:  # the label names them; the container's env holds the values
            config = (await sup.runtime.inspect(info.id)).raw.get("Config") or {}
            spec = restore_secrets(spec, config.get("Env") or [])
    except (ValueError, TypeError, KeyError, LandlordError) as exc:
        log.warning("container %s has an unreadable spec label: %s", info.id[:12], exc)
        return
    record = InstanceRecord(spec, LifecycleRecord.new(spec.version, sup.clock))
    record.container_id = info.id
    record.generation = int(info.labels.get("landlord.generation", "1") or 1)
    sup.records.add(record)
    sup.records.bind(info.id, spec.instance_id)
    sup.move(record, S.INITIALIZING, "rebuilt from a running container's labels")
    await align_container(sup, record, info)
    await _resume(sup, record, report)
    report.rebuilt.append(spec.instance_id)
