"""Instance statuses in etcd, written only when a state changes and batched across reports.

Reports update the leader's memory at once; a status goes to etcd only when the instance's
state, health, restarts, reason or host changed since the last write. The leader flushes
the queue every ``STATUS_FLUSH`` seconds, so the changes of many hosts' reports share one
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from common.clock import Clock
from common.errors import Unavailable
from common.stream_messages import ObservedInstance
from coordinator.state.cluster_state import ClusterState
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import StatusRecord, encode
from coordinator.state.store import Txn

__all__ = ["STATUS_FLUSH", "StatusWriter"]

log = logging.getLogger(__name__)

STATUS_FLUSH = 0.1
"""Seconds between writes of queued instance statuses."""


class StatusWriter:
    def __init__(self, writes: FencedWrites, layout: KeyLayout, state: ClusterState,
                 clock: Clock) -> None:
        self._writes = writes
        self._layout = layout
        self._state = state
        self._clock = clock
        self._unpersisted: dict[str, StatusRecord] = {}
        self._batch = writes.max_txn_ops - 2
        self.written = 0

    def queue(self, observed: Sequence[ObservedInstance]) -> None:
        """Queue the status of the desired instances whose state changed (only those)."""
        for obs in observed:
            if obs.instance_id not in self._state.instances:
                continue
            known = self._unpersisted.get(obs.instance_id) or self._state.statuses.get(
                obs.instance_id)
            if known is None or _key(known) != (obs.state, obs.healthy, obs.restarts,
                                                obs.reason, obs.host_id):
                self._unpersisted[obs.instance_id] = StatusRecord(
                    obs.instance_id, obs.host_id, obs.state, obs.healthy, obs.restarts,
                    obs.reason, self._clock.now())

    async def flush(self) -> None:
        """Write the queued statuses, up to a transaction's worth at a time."""
        while self._unpersisted:
            batch = list(self._unpersisted.items())[: self._batch]
            txn = Txn()
            for iid, record in batch:
                if iid in self._state.instances:
                    txn.put(self._layout.status(iid), encode(record))
            try:
                if not txn.empty:
                    await self._writes.commit(txn, wait=False)
                    self.written += len(txn.puts)
            except Unavailable as exc:
                log.warning("status of %d instance(s) not persisted yet: %s", len(batch), exc)
                return
            for iid, record in batch:
                if self._unpersisted.get(iid) is record:
                    del self._unpersisted[iid]


def _key(record: StatusRecord) -> tuple[str, bool, int, str, str]:
    """What a status change is (a usage-only report changes none of it: nothing written)."""
    return (record.state, record.healthy, record.restarts, record.reason, record.host_id)
