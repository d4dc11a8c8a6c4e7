"""The instance records of this host, in memory: the read API consumers get, and the table
the supervisor (and adoption at start) writes.

Consumers (GC, the resource monitor, the stream) read through ``InstanceRecords``; only
the supervisor, recovery and adoption add and remove records or bind containers to them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from agent.instances.store import InstanceRecord
from common.errors import NotFound
from common.lifecycle import InstanceState

__all__ = ["LIVE_STATES", "InstanceRecords", "RecordTable"]

S = InstanceState
LIVE_STATES = frozenset({S.INITIALIZING, S.READY, S.RUNNING, S.PAUSED})
"""States in which an instance holds its port."""


class InstanceRecords(Protocol):
    """Reading the records of this host's instances."""

    def all(self) -> list[InstanceRecord]:
        """Every record, as a list taken now (safe to iterate while records change)."""
        ...

    def find(self, instance_id: str) -> InstanceRecord | None: ...

    def get(self, instance_id: str) -> InstanceRecord:
        """The record; ``NotFound`` when this host has no such instance."""
        ...

    def owns_container(self, container_id: str) -> bool:
        """Whether the container is (or was until its removal) one of the instances'."""
        ...

    def port_holder(self, port: int, ignore: Collection[str] = ()) -> InstanceRecord | None:
        """A live instance listening on ``port``, other than those in ``ignore``."""
        ...


class RecordTable:
    """Records by instance id, and which container belongs to which instance."""

    def __init__(self) -> None:
        self._records: dict[str, InstanceRecord] = {}
        self._containers: dict[str, str] = {}
        self._expected_exits: set[str] = set()

    # -- reads (InstanceRecords) -------------------------------------------------------
    def all(self) -> list[InstanceRecord]:
        return list(self._records.values())

    def find(self, instance_id: str) -> InstanceRecord | None:
        return self._records.get(instance_id)

    def get(self, instance_id: str) -> InstanceRecord:
        try:
            return self._records[instance_id]
        except KeyError:
            raise NotFound(f"no instance {instance_id!r} on this host",
                           instance=instance_id) from None

    def owns_container(self, container_id: str) -> bool:
        return container_id in self._containers

    def port_holder(self, port: int, ignore: Collection[str] = ()) -> InstanceRecord | None:
        return next((r for r in self._records.values()
                     if r.spec.port == port and r.lifecycle.state in LIVE_STATES
                     and r.instance_id not in ignore), None)

    # -- writes (supervisor, recovery, adoption) ---------------------------------------
    def add(self, record: InstanceRecord) -> None:
        self._records[record.instance_id] = record

    def discard(self, instance_id: str) -> None:
        self._records.pop(instance_id, None)

    def bind(self, container_id: str, instance_id: str) -> None:
        """The container runs (a generation of) the instance."""
        self._containers[container_id] = instance_id

    def expect_exit(self, container_id: str) -> None:
        """The container is being stopped or killed on purpose: its exit is no crash."""
        self._expected_exits.add(container_id)

    def unbind(self, container_id: str) -> None:
        """The container is removed: forget it."""
        self._containers.pop(container_id, None)
        self._expected_exits.discard(container_id)

    def crashed_instance(self, container_id: str) -> InstanceRecord | None:
        """The instance whose current container this is, unless its exit was expected."""
        instance_id = self._containers.get(container_id)
        if instance_id is None or container_id in self._expected_exits:
            return None
        record = self._records.get(instance_id)
        return record if record is not None and record.container_id == container_id else None
