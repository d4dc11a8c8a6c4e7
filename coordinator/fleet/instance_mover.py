"""Moving one instance, in action: what a move observes and the I/O of its actions.

The decisions are coordinator/fleet/instance_move.py (pure); host drains
(coordinator/fleet/drains.py) and unit rebalances (coordinator/fleet/rebalances.py) both
move instances through this one mover: ``PlacementWriter.place`` records the replacement
(the old instance kept and named by the new one), ``CommandDispatch.start_instances`` and
``set_route`` serve it, and ``CommandDispatch.stop_instance`` takes the old instance out of
every host's route before it drains and stops it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

from common.errors import NotFound
from common.event_types import EventType
from common.stream_messages import ObservedInstance
from coordinator.fleet.instance_move import MoveAction, MoveView, Moving
from coordinator.fleet.placement import HostRoom
from coordinator.state.cluster_state import ClusterState
from coordinator.state.records import InstanceRecord

__all__ = ["InstanceMover", "MoveCommands", "MovePlacement"]


class MovePlacement(Protocol):
    """Recording replacements (coordinator/fleet/placement_writer.py)."""

    port_range: tuple[int, int]

    async def place(self, apartment: str, unit: str, version: str, slot: str, replicas: int,
                    building: str, replaces: InstanceRecord | None = None, *,
                    keep_replaced: bool = False, onto: str = "") -> list[InstanceRecord]: ...

    def rooms(self, building: str) -> list[HostRoom]: ...


class MoveCommands(Protocol):
    """Starting, routing and stopping (coordinator/fleet/dispatch.py)."""

    async def start_instances(self, records: Sequence[InstanceRecord]) -> int: ...

    async def set_route(self, apartment: str, unit: str) -> int: ...

    async def stop_instance(self, instance_id: str, drain: bool = True,
                            grace_s: float | None = None) -> None: ...


class InstanceStates(Protocol):
    def known_state(self, instance_id: str) -> ObservedInstance | None: ...


class InstanceMover:
    def __init__(self, state: ClusterState, placement: MovePlacement, commands: MoveCommands,
                 known: InstanceStates) -> None:
        self._state = state
        self.placement = placement
        self._commands = commands
        self._known = known

    def observe(self, moving: Moving | None) -> MoveView:
        """The move under way as the cache and the hosts' reports show it."""
        state = self._state
        if moving is None:
            return MoveView(None, state.instances.keys())
        replacement: dict[str, InstanceRecord] = {}
        for inst in state.instances.values():
            if inst.value.replaces == moving.old_id:
                replacement[moving.old_id] = inst.value
        new_id = moving.new_id or (replacement[moving.old_id].instance_id if replacement else "")
        seen = self._known.known_state(new_id) if new_id else None
        healthy = {new_id} if seen is not None and seen.routable else set()
        errors = {e.instance_id: e.message or "no reason given"
                  for e in state.events.values()
                  if e.type == EventType.START_FAILED and new_id and e.instance_id == new_id}
        old = state.instances.get(moving.old_id)
        return MoveView(old.value if old is not None else None, state.instances.keys(),
                        replacement, healthy, errors)

    async def act(self, action: MoveAction) -> None:
        """Route or stop as ``action`` says (``place`` is the caller's: see ``place``)."""
        if action.kind == "route":
            apartment, unit = action.unit.split("/", 1)
            await self._commands.set_route(apartment, unit)
        elif action.kind in ("stop_old", "stop_new"):
            with contextlib.suppress(NotFound):  # already gone: the next round sees it
                await self._commands.stop_instance(action.instance_id, drain=True)

    def building_of(self, old: InstanceRecord) -> str:
        """Where ``old``'s replacement is placed: its unit's building, else its host's."""
        unit = self._state.units.get(old.unit_key)
        if unit is not None and unit.value.building:
            return unit.value.building
        host = self._state.hosts.get(old.host_id)
        return host.value.building if host is not None else ""

    async def place(self, old: InstanceRecord, onto: str = "") -> InstanceRecord:
        """Record ``old``'s replacement (on ``onto`` when given), keeping ``old``; raises
        placement's refusal. Not started: ``start`` once the caller committed its id."""
        placed = await self.placement.place(old.apartment, old.unit, old.version, old.slot, 1,
                                            self.building_of(old), replaces=old,
                                            keep_replaced=True, onto=onto)
        return placed[0]

    async def start(self, new: InstanceRecord) -> None:
        await self._commands.start_instances([new])
