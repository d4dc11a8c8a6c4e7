"""RolloutStore on the coordinator's etcd store: records by compare-and-swap, the unit's
deploy state through common.lifecycle's table, events through the event log, and the
unit's one active rollout (coordinator/rollouts/one_active.py): claimed in the transaction
that creates a record, released in the one that ends it, reconciled when a leader takes over.

Reads come from the watch-fed ClusterState (no etcd round trip per plan); every write is
fenced by the leader's fence, so a deposed leader cannot move a rollout.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from common.clock import Clock
from common.errors import LandlordError, NotFound
from common.lifecycle import DEPLOY_TRANSITIONS, DeployState, check_transition
from coordinator.rollouts.actions import EmitEvent, SetUnitState
from coordinator.rollouts.one_active import claim, reconcile, release
from coordinator.rollouts.record import Phase, RolloutRecord, decode_record, encode_record
from coordinator.rollouts.settings import Strategy
from coordinator.rollouts.transitions import event
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import UnitRecord, encode
from coordinator.state.store import Txn

__all__ = ["HISTORY", "EtcdRolloutRecords", "previous_stable"]

log = logging.getLogger(__name__)

HISTORY = 10
"""Rollouts kept per unit (the oldest ended ones are deleted when a new one is created)."""

T = TypeVar("T")


def previous_stable(history: Iterable[RolloutRecord], stable: str) -> str:
    """The version ``stable`` replaced: the from-version of the newest promoted rollout to
    ``stable`` (``history`` newest first); "" when there is none."""
    for record in history:
        if record.phase is Phase.PROMOTED and record.to_version == stable and (
            record.from_version
        ):
            return record.from_version
    return ""


class EtcdRolloutRecords:
    def __init__(self, writes: FencedWrites, layout: KeyLayout, state: ClusterState,
                 events: EventLog, clock: Clock) -> None:
        self._writes = writes
        self.layout = layout
        self.state = state
        self.events = events
        self.clock = clock
        self._unit_written: dict[tuple[str, str], int] = {}
        """The revision of this coordinator's last write of each unit's record: the next
        decision on that unit waits until the cache holds it (its writes do not wait)."""

    # -- reading ---------------------------------------------------------------------------

    def history(self, apartment: str, unit: str) -> list[tuple[RolloutRecord, int]]:
        """The unit's rollouts with their mod revisions, newest first."""
        found = []
        for value in self.state.rollouts.get((apartment, unit), {}).values():
            try:
                found.append((decode_record(value.value), value.mod_revision))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("skipping an unreadable rollout record of %s/%s: %s",
                          apartment, unit, exc)
        return sorted(found, key=lambda item: (item[0].created_at, item[0].rollout_id),
                      reverse=True)

    def protected_versions(self, apartment: str, unit: str) -> tuple[str, ...]:
        """The unit's stable version and the one before it: hosts keep their images, so a
        fast rollback never needs a pull (sent with the unit's route)."""
        found = self.state.units.get((apartment, unit))
        stable = found.value.stable_version if found is not None else ""
        if not stable:
            return ()
        before = previous_stable((r for r, _ in self.history(apartment, unit)), stable)
        return (stable, before) if before else (stable,)

    def active(self, apartment: str, unit: str) -> tuple[RolloutRecord, int] | None:
        for record, revision in self.history(apartment, unit):
            if record.active:
                return record, revision
        return None

    def all_active(self) -> list[tuple[RolloutRecord, int]]:
        out = []
        for apartment, unit in list(self.state.rollouts):
            found = self.active(apartment, unit)
            if found is not None:
                out.append(found)
        return out

    async def load(self, record: RolloutRecord) -> tuple[RolloutRecord, int]:
        value = self.state.rollouts.get((record.apartment, record.unit), {}).get(
            record.rollout_id)
        if value is None:
            raise NotFound(f"rollout {record.rollout_id} of {record.apartment}/{record.unit} "
                           "does not exist", rollout=record.rollout_id)
        return decode_record(value.value), value.mod_revision

    # -- writing ---------------------------------------------------------------------------

    def _key(self, record: RolloutRecord) -> str:
        return self.layout.rollout(record.apartment, record.unit, record.rollout_id)

    async def save(self, record: RolloutRecord, revision: int, wait: bool = False) -> int:
        """Write ``record`` if it is still at ``revision`` (a terminal one also releases the
        unit's active-rollout key); with ``wait``, return once the cache holds it."""
        txn = Txn().require(self._key(record), revision).put(self._key(record),
                                                              encode_record(record))
        holder = self.state.active_rollouts.get((record.apartment, record.unit))
        txn.extend(release(self.layout, record, holder))
        return await self._writes.commit(txn, wait=wait)

    async def retry(self, attempt: Callable[[], Awaitable[T]], what: str,
                    **context: object) -> T:
        """A compare-and-swap decision on rollout records, retried after a lost compare."""
        return await self._writes.retry(attempt, what, **context)

    def creation(self, record: RolloutRecord) -> Txn:
        """The writes that create ``record``, claim the unit's active-rollout key for it
        and drop the oldest ended records beyond ``HISTORY`` (to commit alone, or with the
        placement of its instances). Built from the cache as it is now: FailedPrecondition
        when another rollout of the unit is active."""
        old = [r for r, _ in self.history(record.apartment, record.unit)]
        holder = self.state.active_rollouts.get((record.apartment, record.unit))
        # the record before the key: the cache never holds a key naming an unknown rollout
        txn = Txn().require(self._key(record), 0).put(self._key(record), encode_record(record))
        txn.extend(claim(self.layout, record, holder, old))
        for stale in [r for r in old if r.terminal][max(0, HISTORY - 1):]:
            txn.delete(self._key(stale))
        return txn

    async def create(self, record: RolloutRecord) -> int:
        """Write a new record (see ``creation``), decided again after a lost compare."""
        return await self._writes.retry(lambda: self._writes.commit(self.creation(record)),
                                        f"creating a rollout of {record.apartment}/"
                                        f"{record.unit}", unit=record.unit)

    async def take_over(self) -> list[tuple[RolloutRecord, int]]:
        """A new leader's view made consistent: every unit's active-rollout key agrees
        with its records (``one_active.reconcile``); returns the active rollouts to run."""
        self._unit_written.clear()  # an earlier term's writes: the cache is past them
        units = {key for key, found in self.state.rollouts.items() if found}
        for apartment, unit in sorted(units | set(self.state.active_rollouts)):
            await self._writes.retry(functools.partial(self._reconcile, apartment, unit),
                                     f"checking the active rollout of {apartment}/{unit}",
                                     unit=unit)
        return self.all_active()

    async def _reconcile(self, apartment: str, unit: str) -> None:
        done = reconcile(self.layout, apartment, unit,
                         self.state.active_rollouts.get((apartment, unit)),
                         self.history(apartment, unit), self.clock.now())
        if done.txn.empty:
            return
        await self._writes.commit(done.txn)
        if done.keep is not None:
            log.info("%s/%s: rollout %s holds the unit's active-rollout key", apartment,
                     unit, done.keep.rollout_id)
        for failed in done.failed:
            log.error("rollout %s stopped: %s", failed.rollout_id, failed.reason)
            try:
                await self.emit(failed, event("rollout.failed", failed, failed.reason))
            except LandlordError as exc:  # the record says it; the event is a courtesy
                log.warning("rollout %s: event not recorded: %s", failed.rollout_id, exc)

    async def set_unit_state(self, record: RolloutRecord, action: SetUnitState) -> None:
        key = (record.apartment, record.unit)

        async def attempt() -> None:
            found = self.state.units.get(key)
            written = self._unit_written.get(key, 0)
            if found is None or found.mod_revision < written:
                # decide on our own last write, not on a cache that has yet to see it (a
                # rollout's next state is only valid from the one it wrote last)
                await self._writes.wait_for_revision(written)
                found = self.state.units.get(key)
            current = found.value if found else UnitRecord(record.apartment, record.unit)
            target = DeployState(action.state)
            if current.state != target.value:
                check_transition(DEPLOY_TRANSITIONS, DeployState(current.state or "idle"),
                                 target)
            updated = replace(current, state=target.value, building=record.building,
                              latest_version=current.latest_version or record.to_version)
            if record.settings.strategy is not Strategy.ROLLBACK:
                # an operator's deploy: its (explicit or inherited) choice is the default
                updated = replace(updated, sticky=record.settings.sticky)
            if action.stable_version:
                updated = replace(updated, stable_version=action.stable_version,
                                  replicas=record.settings.replicas
                                  if action.stable_version == record.to_version
                                  else current.replicas,
                                  # deployed again: the failing mark is the operator's to lift
                                  failing_versions={
                                      v: why for v, why in current.failing_versions.items()
                                      if v != action.stable_version})
            if updated == current:
                return
            updated = replace(updated, updated_at=self.clock.now())
            txn = Txn().require(self.layout.unit(*key), found.mod_revision if found else 0)
            txn.put(self.layout.unit(*key), encode(updated))
            revision = await self._writes.commit(txn, wait=False)
            self._unit_written[key] = max(revision, self._unit_written.get(key, 0))

        await self._writes.retry(attempt, f"updating {record.apartment}/{record.unit}",
                                 unit=record.unit)

    async def emit(self, record: RolloutRecord, event: EmitEvent) -> None:
        await self.events.emit(event.type, event.message, apartment=record.apartment,
                               unit=record.unit, version=record.to_version,
                               **dict(event.details))
