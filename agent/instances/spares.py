"""A pre-created replacement container per instance: a crash then costs a start, not an
image check, a create and the state directory's ownership, on its critical path.

Once an instance is healthy, the container of its next generation is created (not
started) in the background, with the request a launch would make. A launch takes it when
it is for the same spec and generation, and otherwise creates one as before. A spare is
bound to its instance (so the cache GC leaves it alone) and removed with it. An agent
restart forgets spares: one left behind is a never-started landlord container no record
references (the cache GC removes it, and a launch of its generation removes one holding
its name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.instances.records import RecordTable
from agent.instances.spec import InstanceSpec
from agent.instances.store import InstanceRecord
from agent.runtime.protocol import ContainerRuntime
from common.errors import LandlordError

__all__ = ["Spare", "Spares"]

log = logging.getLogger(__name__)

Creator = Callable[[InstanceRecord, int], Awaitable[str]]
"""Creates (not starts) the container of ``record``'s given generation; returns its id."""


@dataclass(frozen=True)
class Spare:
    container_id: str
    generation: int
    spec: InstanceSpec

    def fits(self, spec: InstanceSpec, generation: int) -> bool:
        """Made for exactly this spec and generation (anything else is a stale spare)."""
        return self.generation == generation and self.spec == spec


class Spares:
    """The spare container of each instance that has one."""

    def __init__(self, runtime: ContainerRuntime, records: RecordTable, create: Creator,
                 enabled: bool = True) -> None:
        self.runtime = runtime
        self.records = records
        self.create = create
        self.enabled = enabled
        self._spares: dict[str, Spare] = {}
        self._making: dict[str, asyncio.Task[None]] = {}

    def get(self, instance_id: str) -> Spare | None:
        return self._spares.get(instance_id)

    def prepare(self, record: InstanceRecord) -> None:
        """Create the next generation's container in the background, unless one fits."""
        instance_id, generation = record.instance_id, record.generation + 1
        spare = self._spares.get(instance_id)
        if not self.enabled or instance_id in self._making or (
                spare is not None and spare.fits(record.spec, generation)):
            return
        task = asyncio.create_task(self._make(record, generation), name=f"spare-{instance_id}")
        self._making[instance_id] = task
        task.add_done_callback(lambda _: self._making.pop(instance_id, None))

    async def _make(self, record: InstanceRecord, generation: int) -> None:
        try:
            container_id = await self.create(record, generation)
        except LandlordError as exc:  # no spare: a crash creates one as before
            log.warning("spare container for %s not created: %s", record.instance_id, exc)
            return
        self.records.bind(container_id, record.instance_id)
        old = self._spares.get(record.instance_id)
        self._spares[record.instance_id] = Spare(container_id, generation, record.spec)
        if old is not None and old.container_id != container_id:
            await self._remove(old.container_id)

    async def take(self, record: InstanceRecord, generation: int) -> str | None:
        """The spare made for ``record``'s spec and ``generation`` (waiting for one being
        made), now the caller's; ``None`` when there is none (a stale one is removed)."""
        making = self._making.get(record.instance_id)
        if making is not None:
            await asyncio.gather(asyncio.shield(making), return_exceptions=True)
        spare = self._spares.pop(record.instance_id, None)
        if spare is None:
            return None
        if spare.fits(record.spec, generation):
            return spare.container_id
        await self._remove(spare.container_id)
        return None

    async def drop(self, instance_id: str) -> None:
        """The instance is stopped or evicted: remove its spare (one being made, once made)."""
        making = self._making.get(instance_id)
        if making is not None:
            await asyncio.gather(asyncio.shield(making), return_exceptions=True)
        spare = self._spares.pop(instance_id, None)
        if spare is not None:
            await self._remove(spare.container_id)

    async def _remove(self, container_id: str) -> None:
        with contextlib.suppress(LandlordError):
            await self.runtime.remove(container_id, force=True)
        self.records.unbind(container_id)
