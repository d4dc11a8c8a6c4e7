"""The cluster's event log in etcd: appended by the leader, bounded, streamed to anyone.

Each event is one key under ``{p}/events/`` named by time, so key order is time order; its
sequence number is its create revision x 1000 plus its position in the transaction that
wrote it, so events written together still have distinct, ordered sequences. The leader
trims the oldest keys beyond the configured history (count) now and then; readers stream
the history from the ClusterState cache and follow new events as the watch delivers them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import replace

from common.clock import Clock
from coordinator.errors import NotLeader
from coordinator.state.cluster_state import ClusterState
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.migrations import RECORDS, dumps
from coordinator.state.records import EventRecord
from coordinator.state.store import Txn

__all__ = ["EventLog"]

log = logging.getLogger(__name__)


class EventLog:
    def __init__(self, writes: FencedWrites, layout: KeyLayout, state: ClusterState,
                 clock: Clock, capacity: int = 1000) -> None:
        self._writes = writes
        self._layout = layout
        self._state = state
        self._clock = clock
        self.capacity = capacity
        self._batch = writes.max_txn_ops - 2
        self._counter = itertools.count()
        self.written = 0

    def make(self, type_: str, message: str = "", **fields: str) -> EventRecord:
        details = {k: v for k, v in fields.items() if k not in _TOP_LEVEL and v}
        return EventRecord(
            type=type_, time=self._clock.now(), message=message,
            apartment=fields.get("apartment", ""), unit=fields.get("unit", ""),
            version=fields.get("version", ""), host_id=fields.get("host_id", ""),
            instance_id=fields.get("instance_id", ""), details=details,
        )

    def key_for(self, event: EventRecord) -> str:
        """A fresh key for ``event`` (time-ordered, unique within this coordinator)."""
        return self._layout.event(int(event.time * 1e9), next(self._counter) % 1_000_000)

    async def emit(self, type_: str, message: str = "", **fields: str) -> None:
        await self.append([self.make(type_, message, **fields)])

    def staged(self, events: Sequence[EventRecord]) -> Txn:
        """The puts of ``events`` for the caller's own transaction, so they are written with
        the change they record or not at all (at most one batch of events)."""
        txn = Txn()
        for index, event in enumerate(events[: self._batch]):
            txn.put(self.key_for(event), encode_event(replace(event, batch_index=index)))
        return txn

    async def append(self, events: Sequence[EventRecord]) -> None:
        """Write ``events`` (fenced); events are history, so a failure is logged, not raised."""
        for start in range(0, len(events), self._batch):
            txn = Txn()
            for index, event in enumerate(events[start : start + self._batch]):
                txn.put(self.key_for(event), encode_event(replace(event, batch_index=index)))
            try:
                await self._writes.commit(txn, wait=False)
                self.written += len(txn.puts)
            except NotLeader as exc:  # the new leader records what happens from now on
                log.debug("not recording %d event(s): %s", len(txn.puts), exc)
            except Exception as exc:  # an event must never fail the action it records
                log.warning("could not record %d event(s): %s", len(txn.puts), exc)

    async def trim(self) -> int:
        """Delete the oldest events beyond ``capacity``; returns how many."""
        names = sorted(self._state.events)
        excess = names[: max(0, len(names) - self.capacity)]
        for start in range(0, len(excess), self._batch):
            txn = Txn()
            for name in excess[start : start + self._batch]:
                txn.delete(self._layout.events + name)
            await self._writes.commit(txn, wait=False)
        return len(excess)


_TOP_LEVEL = {"apartment", "unit", "version", "host_id", "instance_id"}


def encode_event(event: EventRecord) -> bytes:
    return dumps(RECORDS.stamp(event.as_stored()))
