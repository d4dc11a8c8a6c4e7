"""The rollout runner: observe, plan, commit, act; one asyncio task per active rollout.

Rules kept here:

- The new record is committed (compare-and-swap on its mod revision) *before* any action.
  A lost compare means someone else wrote the record (an operator's control): the runner
  re-reads it and plans again. A record whose ``seq`` moved on under it belongs to another
  leader: the runner stops.
- Actions run in order; ``SetSplit`` reaches every host at once inside the fleet adapter.
  A failed action is retried (only the idempotent ``actions_for`` of the record, never
  its events) and its error goes to the engine, which decides when to give up.
- On resume (a new leader, a restart) the actions of the committed record are carried out
  again before anything else; they are idempotent.
- An action that meets an invalid state transition (the unit is not where this rollout
  thinks it is) is not retried: the runner records the rollout failed with the reason (its
  record and a ``rollout.failed`` event), logs it once and stops. An ended record whose
  last actions keep failing is given up after ``MAX_UNDO_FAILURES`` tries.

The outside world sits behind two Protocols: ``RolloutFleet`` (instances, windows, agents)
and ``RolloutStore`` (rollout records, unit state, events in etcd).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from common.clock import Clock
from common.errors import Conflict, InvalidTransition, LandlordError
from common.rollout_policy import Window
from coordinator.errors import NotLeader
from coordinator.rollouts import actions as act
from coordinator.rollouts.engine import MAX_UNDO_FAILURES, actions_for, plan
from coordinator.rollouts.record import Phase, RolloutRecord
from coordinator.rollouts.transitions import event, stop_failed

__all__ = ["RolloutFleet", "RolloutRunner", "RolloutStore", "RunnerSettings"]

log = logging.getLogger(__name__)


class RolloutFleet(Protocol):
    """What the engine needs from the hosts (through the coordinator's agent streams)."""

    def instances(self, record: RolloutRecord) -> tuple[act.InstanceView, ...]:
        """Every instance of the record's unit, as last observed."""
        ...

    def window(
        self, record: RolloutRecord, version: str, since: float, now: float
    ) -> Window | None:
        """Requests to ``version`` of the unit since ``since``, merged over every host."""
        ...

    async def start_instances(self, record: RolloutRecord, action: act.StartInstances) -> None: ...

    async def set_split(self, record: RolloutRecord, action: act.SetSplit) -> None:
        """Record the split and send it to every host of the building concurrently."""
        ...

    async def stop_instances(self, record: RolloutRecord, action: act.StopInstances) -> None: ...

    async def run_checks(self, record: RolloutRecord, action: act.RunChecks) -> act.CheckReport: ...


class RolloutStore(Protocol):
    """Rollout records (compare-and-swap), the unit's deploy state, and events."""

    async def load(self, record: RolloutRecord) -> tuple[RolloutRecord, int]:
        """The freshest stored record with this one's id, and its mod revision (called on
        every plan, so it should read a watch-fed cache; a revision older than the
        runner's own write is ignored)."""
        ...

    async def save(self, record: RolloutRecord, revision: int) -> int:
        """Write ``record`` if it is still at ``revision`` (0: absent); the new revision.
        Raises Conflict when the compare fails."""
        ...

    async def set_unit_state(self, record: RolloutRecord, action: act.SetUnitState) -> None: ...

    async def emit(self, record: RolloutRecord, event: act.EmitEvent) -> None: ...


Sleeper = Callable[[float], Awaitable[None]]


class RunnerSettings:
    def __init__(self, poll_s: float = 0.2, retry_s: float = 1.0) -> None:
        self.poll_s = poll_s
        """Longest wait between two plans (observations change without telling)."""
        self.retry_s = retry_s
        """Wait before carrying out failed actions again."""


class RolloutRunner:
    """Runs one rollout to its end (or until this coordinator stops leading)."""

    def __init__(
        self,
        store: RolloutStore,
        fleet: RolloutFleet,
        clock: Clock,
        settings: RunnerSettings | None = None,
        sleeper: Sleeper | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.clock = clock
        self.settings = settings or RunnerSettings()
        self._wake = asyncio.Event()
        self._sleeper = sleeper
        self.applied_seq = 0
        self._checks: act.CheckReport | None = None
        self._error = ""
        self._failures = 0
        self._error_seq = -1
        self._retry_at = 0.0
        self.record: RolloutRecord | None = None
        self._revision = 0

    def wake(self) -> None:
        """Plan again now (a control was written, an observation changed)."""
        self._wake.set()

    async def run(
        self, record: RolloutRecord, revision: int, resumed: bool = False
    ) -> RolloutRecord:
        """Drive ``record`` (stored at ``revision``) until it ends; returns the last record."""
        self._at(record, revision)
        try:
            return await self._drive(record, revision, resumed)
        except InvalidTransition as exc:
            return await self._stop(exc)

    def _at(self, record: RolloutRecord, revision: int) -> None:
        self.record, self._revision = record, revision

    async def _drive(
        self, record: RolloutRecord, revision: int, resumed: bool
    ) -> RolloutRecord:
        if resumed:
            log.info("rollout %s: resuming %s at seq %d", record.rollout_id,
                     record.phase.value, record.seq)
            await self._execute(record, actions_for(record))
        while True:
            if record.terminal and self.applied_seq >= record.seq:
                return record
            if record.terminal and self._error_seq == record.seq and (
                    self._failures >= MAX_UNDO_FAILURES):
                log.error("rollout %s ended %s; its last actions failed %d times, given up: "
                          "%s", record.rollout_id, record.phase.value, self._failures,
                          self._error)
                return record
            stored, stored_revision = await self.store.load(record)
            if stored_revision > revision:  # an operator's control, written by CAS
                if stored.seq != record.seq:
                    log.warning("rollout %s moved on elsewhere (seq %d -> %d); stopping",
                                record.rollout_id, record.seq, stored.seq)
                    return stored
                record, revision = stored, stored_revision
                self._at(record, revision)
            now = self.clock.now()
            moved, actions = plan(record, self._observe(record, now), now)
            if moved == record:
                if self.applied_seq < record.seq and now >= self._retry_at:
                    await self._execute(record, actions_for(record))
                    continue
                until = next((a.until for a in actions if isinstance(a, act.Wait)),
                             now + self.settings.poll_s)
                await self._pause(until - now)
                continue
            try:
                revision = await self.store.save(moved, revision)
            except Conflict:
                stored, revision = await self.store.load(record)
                if stored.seq != record.seq:
                    log.warning("rollout %s moved on elsewhere (seq %d -> %d); stopping",
                                record.rollout_id, record.seq, stored.seq)
                    return stored
                record = stored
                self._at(record, revision)
                continue
            record = moved
            self._at(record, revision)
            await self._execute(record, actions)

    async def _stop(self, error: InvalidTransition) -> RolloutRecord:
        """Record the rollout failed for ``error`` (and say so once); no retry."""
        assert self.record is not None
        reason = (f"{self.record.phase.value}: {error}; the rollout stopped (the unit's state "
                  "does not follow this rollout: it needs an operator)")
        log.error("rollout %s stopped: %s", self.record.rollout_id, reason)
        for _ in range(3):  # an operator's control may land meanwhile: decide again
            record, revision = self.record, self._revision
            failed = stop_failed(record, reason, self.clock.now())
            try:
                self._at(failed, await self.store.save(failed, revision))
            except Conflict:
                stored, stored_revision = await self.store.load(record)
                if stored.seq != record.seq:
                    return stored
                self._at(stored, stored_revision)
                continue
            await self._do(failed, event("rollout.failed", failed, reason))
            return failed
        return self.record

    # -- observing -------------------------------------------------------------------------

    def _observe(self, record: RolloutRecord, now: float) -> act.Observations:
        canary = stable = None
        if record.phase is Phase.SWITCHING and record.settings.judged:
            canary = self.fleet.window(record, record.to_version, record.window_start, now)
            if record.has_stable:
                stable = self.fleet.window(record, record.from_version, record.window_start, now)
        return act.Observations(
            instances=self.fleet.instances(record),
            applied_seq=self.applied_seq,
            canary=canary,
            stable=stable,
            checks=self._checks,
            action_error=self._error if self._error_seq == record.seq else "",
            action_failures=self._failures if self._error_seq == record.seq else 0,
        )

    # -- acting ----------------------------------------------------------------------------

    async def _execute(self, record: RolloutRecord, actions: Sequence[act.Action]) -> None:
        try:
            for action in actions:
                await self._do(record, action)
        except (NotLeader, InvalidTransition):
            raise
        except (TimeoutError, LandlordError, OSError) as exc:
            if self._error_seq != record.seq:
                self._failures = 0
            self._failures += 1
            self._error_seq = record.seq
            self._error = str(exc) or type(exc).__name__
            self._retry_at = self.clock.now() + self.settings.retry_s
            log.warning("rollout %s: %s failed (%d): %s", record.rollout_id,
                        record.phase.value, self._failures, self._error)
            return
        self.applied_seq = record.seq
        self._failures, self._error, self._error_seq = 0, "", -1

    async def _do(self, record: RolloutRecord, action: act.Action) -> None:
        if isinstance(action, act.SetSplit):
            await self.fleet.set_split(record, action)
        elif isinstance(action, act.StartInstances):
            await self.fleet.start_instances(record, action)
        elif isinstance(action, act.StopInstances):
            await self.fleet.stop_instances(record, action)
        elif isinstance(action, act.RunChecks):
            report = await self.fleet.run_checks(record, action)
            self._checks = replace(report, seq=record.seq)
        elif isinstance(action, act.SetUnitState):
            await self.store.set_unit_state(record, action)
        elif isinstance(action, act.EmitEvent):
            try:
                await self.store.emit(record, action)
            except LandlordError as exc:  # an event never fails the step it tells about
                log.warning("rollout %s: event %s not recorded: %s", record.rollout_id,
                            action.type, exc)

    async def _pause(self, seconds: float) -> None:
        delay = max(0.0, min(seconds, self.settings.poll_s))
        if self._sleeper is not None:
            await self._sleeper(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        self._wake.clear()
