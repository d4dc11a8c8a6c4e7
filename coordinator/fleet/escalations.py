"""Escalations in action (a leader duty): re-place an escalated instance once, then mark its
version failing for the unit if the replacement escalates too.

Each round reads the escalations agents reported (``recovery.escalated`` events of instances
their agent still reports in ``error``), asks ``plan_escalations``
(coordinator/fleet/escalation_plan.py) what to do, and acts with the means healing and drains
use: ``PlacementWriter.place`` (the placement rules; the escalated instance's host avoided;
the escalated record out and its replacement in, in one transaction that also records why),
``CommandDispatch.start_instances`` and ``set_route`` (the replacement is routed once it is
healthy), and a stop of the old container on its host. Marking a version failing writes the
unit record (its ``failing_versions``; a running unit whose stable version it is becomes
``failed`` by the deploy-state table) and a ``unit.version_failing`` event in one
transaction. Everything the decision needs is in etcd, so a new leader never re-places an
instance twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from common.errors import Conflict, FailedPrecondition, InsufficientResources, NotFound
from common.event_types import EventType
from common.lifecycle import DEPLOY_TRANSITIONS, DeployState, InstanceState, can_transition
from common.stream_messages import ObservedInstance
from coordinator.fleet.escalation_plan import EscalationAction, EscalationStep, plan_escalations
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import InstanceRecord, UnitRecord, encode
from coordinator.state.store import Txn

__all__ = ["Escalations"]

log = logging.getLogger(__name__)


class EscalationPlacement(Protocol):
    """Placing an instance again elsewhere (coordinator/fleet/placement_writer.py)."""

    async def place(self, apartment: str, unit: str, version: str, slot: str, replicas: int,
                    building: str, replaces: InstanceRecord | None = None, *,
                    avoid_hosts: frozenset[str] = frozenset(), after_escalation: str = ""
                    ) -> list[InstanceRecord]: ...


class EscalationCommands(Protocol):
    """Starting, routing and stopping (coordinator/fleet/dispatch.py)."""

    async def start_instances(self, records: Sequence[InstanceRecord]) -> int: ...

    async def set_route(self, apartment: str, unit: str) -> int: ...

    def stop_unwanted(self, host_id: str, instance_id: str) -> None: ...


class InstanceStates(Protocol):
    def known_state(self, instance_id: str) -> ObservedInstance | None: ...


class Escalations:
    def __init__(self, *, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 events: EventLog, placement: EscalationPlacement, commands: EscalationCommands,
                 known: InstanceStates) -> None:
        self._state = state
        self._layout = layout
        self._writes = writes
        self._events = events
        self._placement = placement
        self._commands = commands
        self._known = known
        self._unplaceable: set[str] = set()
        self.replaced = 0

    def escalated(self) -> dict[str, str]:
        """Instance id -> why its agent gave up, for instances it still reports in error."""
        found: dict[str, str] = {}
        for event in self._state.events.values():
            if event.type != EventType.ESCALATION or not event.instance_id:
                continue
            seen = self._known.known_state(event.instance_id)
            if seen is not None and seen.state == InstanceState.ERROR:
                found[event.instance_id] = (event.message or event.details.get("reason", "")
                                            or "its agent gave up")
        return found

    async def tick(self) -> None:
        state = self._state
        escalated = self.escalated()
        if not escalated:
            return
        failing = {key: found.value.failing_versions for key, found in state.units.items()}
        actions = plan_escalations((v.value for v in state.instances.values()), escalated,
                                   set(state.active_rollouts), failing)
        for action in actions:
            try:
                if action.step is EscalationStep.REPLACE:
                    await self._replace(action)
                else:
                    await self._mark_failing(action)
            except Conflict as exc:  # another change won; the next round decides again
                log.warning("escalation of %s: not acted on this round: %s",
                            action.instance.instance_id, exc)

    async def _replace(self, action: EscalationAction) -> None:
        old = action.instance
        host = self._state.hosts.get(old.host_id)
        unit = self._state.units.get(old.unit_key)
        building = (unit.value.building if unit and unit.value.building
                    else host.value.building if host else "")
        try:
            placed = await self._placement.place(
                old.apartment, old.unit, old.version, old.slot, 1, building, replaces=old,
                avoid_hosts=frozenset({old.host_id}), after_escalation=action.reason)
        except (InsufficientResources, FailedPrecondition, NotFound) as exc:
            if old.instance_id not in self._unplaceable:
                self._unplaceable.add(old.instance_id)
                log.error("escalated %s cannot be placed on another host: %s",
                          old.instance_id, exc)
                await self._events.emit(
                    "instance.unplaceable", f"{action.reason}; no other host fits: {exc}",
                    apartment=old.apartment, unit=old.unit, version=old.version,
                    host_id=old.host_id, instance_id=old.instance_id)
            return
        self._unplaceable.discard(old.instance_id)
        new = placed[0]
        self.replaced += 1
        log.warning("%s; re-placed as %s on %s", action.reason, new.instance_id, new.host_id)
        await self._events.emit(
            EventType.INSTANCE_REPLACED.value,
            f"{action.reason}; re-placed once as {new.instance_id} on {new.host_id}",
            apartment=old.apartment, unit=old.unit, version=old.version,
            host_id=old.host_id, instance_id=old.instance_id, replacement=new.instance_id,
            from_host=old.host_id, to_host=new.host_id)
        await self._commands.start_instances(placed)
        self._commands.stop_unwanted(old.host_id, old.instance_id)
        await self._commands.set_route(old.apartment, old.unit)

    async def _mark_failing(self, action: EscalationAction) -> None:
        inst = action.instance
        key = inst.unit_key
        found = self._state.units.get(key)
        current = found.value if found else UnitRecord(inst.apartment, inst.unit)
        updated = replace(current, failing_versions={**current.failing_versions,
                                                     inst.version: action.reason})
        source = DeployState(current.state or "idle")
        if inst.version == current.stable_version and can_transition(
                DEPLOY_TRANSITIONS, source, DeployState.FAILED):
            updated = replace(updated, state=DeployState.FAILED.value)
        event = self._events.make(
            EventType.VERSION_FAILING.value,
            f"{inst.apartment}/{inst.unit} {inst.version} marked failing, its instances are "
            f"not re-placed again (a version that fails wherever it runs is not a host "
            f"problem): {action.reason}",
            apartment=inst.apartment, unit=inst.unit, version=inst.version,
            host_id=inst.host_id, instance_id=inst.instance_id)
        txn = Txn().require(self._layout.unit(*key), found.mod_revision if found else 0)
        txn.put(self._layout.unit(*key), encode(updated))
        txn.extend(self._events.staged([event]))
        await self._writes.commit(txn)
        log.error("%s", event.message)
