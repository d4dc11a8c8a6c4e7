"""One active rollout per unit, held by a key in etcd (pure: builds transactions).

The unit's key ``{p}/active-rollout/{apartment}/{unit}`` names its active rollout. Rules:

- ``claim``: the transaction that creates a rollout record also creates the key, guarded
  by a compare (absent, or still at the revision of a key that names an ended rollout).
  Of two Deploys that decided from the same cache, the second one's compare fails; decided
  again from a fresher cache it is refused (FAILED_PRECONDITION naming the active one).
- ``release``: the transaction that writes a rollout's terminal record deletes the key if
  it names that rollout.
- ``reconcile``: when a leader takes over, the key is made to agree with the records: an
  active rollout written by an older release (no key) gets one; a key naming an ended or
  vanished rollout goes; of several active rollouts of one unit (left by an older release's
  race), the key's (else the oldest) stays active and the others fail, each saying which
  rollout superseded it. Their runners are never started.

A rollout that ended is terminal forever (a retry is a new rollout), so a key naming an
ended rollout can safely be replaced at its revision. A key naming a rollout the cache does
not hold is never replaced by a Deploy: the record is written before the key in the same
transaction (the watch-fed cache applies a transaction's changes one by one, in order), so
that is not cache lag but a vanished record, and a new leader's ``reconcile`` drops it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import FailedPrecondition
from coordinator.rollouts.record import RolloutRecord, encode_record
from coordinator.rollouts.transitions import stop_failed
from coordinator.state.cluster_state import Versioned
from coordinator.state.keys import KeyLayout
from coordinator.state.records import ActiveRolloutRecord, encode
from coordinator.state.store import Txn

__all__ = ["Reconciled", "already_active", "claim", "reconcile", "release", "superseded"]

Holder = Versioned[ActiveRolloutRecord] | None
"""The unit's key as the cache holds it (None: absent)."""


def already_active(active: RolloutRecord) -> FailedPrecondition:
    """The refusal of a new rollout while ``active`` runs (names it and its phase)."""
    return FailedPrecondition(
        f"{active.apartment}/{active.unit} already has an active rollout {active.rollout_id} "
        f"({active.from_version or '-'} -> {active.to_version}, {active.public_phase()}); "
        "promote or abort it first",
        unit=active.unit, rollout=active.rollout_id)


def _oldest_active(history: Sequence[RolloutRecord], but: str = "") -> RolloutRecord | None:
    found = sorted((r for r in history if r.active and r.rollout_id != but),
                   key=lambda r: (r.created_at, r.rollout_id))
    return found[0] if found else None


def _guard(txn: Txn, key: str, holder: Holder) -> Txn:
    return txn.require(key, holder.mod_revision if holder is not None else 0)


def claim(layout: KeyLayout, record: RolloutRecord, holder: Holder,
          history: Sequence[RolloutRecord]) -> Txn:
    """The compare and put that make ``record`` its unit's active rollout, to commit with
    its creation; FailedPrecondition when another rollout of the unit is active."""
    by_id = {r.rollout_id: r for r in history}
    if holder is not None and holder.value.rollout_id != record.rollout_id:
        held = by_id.get(holder.value.rollout_id)
        if held is None:  # only an ended record frees the key (a new leader drops this one)
            raise FailedPrecondition(
                f"{record.apartment}/{record.unit} is held by rollout "
                f"{holder.value.rollout_id}, whose record is not readable; promote or abort "
                "it, or retry after the next leader change", unit=record.unit,
                rollout=holder.value.rollout_id)
        if held.active:
            raise already_active(held)
    other = _oldest_active(history, but=record.rollout_id)
    if other is not None:  # active without a key: written by an older release
        raise already_active(other)
    key = layout.active_rollout(record.apartment, record.unit)
    txn = _guard(Txn(), key, holder)
    return txn.put(key, encode(ActiveRolloutRecord(record.rollout_id, record.created_at)))


def release(layout: KeyLayout, record: RolloutRecord, holder: Holder) -> Txn:
    """Delete the unit's key with ``record``'s terminal write, if the key names it."""
    txn = Txn()
    if record.terminal and holder is not None and holder.value.rollout_id == record.rollout_id:
        key = layout.active_rollout(record.apartment, record.unit)
        _guard(txn, key, holder).delete(key)
    return txn


def superseded(record: RolloutRecord, by: str, now: float) -> RolloutRecord:
    """``record`` failed: another rollout of its unit holds the unit (no actions run)."""
    return stop_failed(record, f"another rollout of {record.apartment}/{record.unit}, {by}, "
                               "was active at the same time; one active rollout per unit: "
                               "this one stopped (its instances are left for an operator)",
                       now)


@dataclass(frozen=True)
class Reconciled:
    """What a new leader writes for one unit, and what it then runs."""

    txn: Txn
    keep: RolloutRecord | None
    """The unit's one active rollout (None: none)."""
    failed: tuple[RolloutRecord, ...] = ()
    """Other active rollouts of the unit, now failed (their records are in ``txn``)."""


def reconcile(layout: KeyLayout, apartment: str, unit: str, holder: Holder,
              history: Sequence[tuple[RolloutRecord, int]], now: float) -> Reconciled:
    """The key and records of one unit made to agree (see the module rules); ``history``
    holds each record with its mod revision."""
    records = [r for r, _ in history]
    held = next((r for r in records if holder is not None
                 and r.rollout_id == holder.value.rollout_id and r.active), None)
    keep = held or _oldest_active(records)
    key = layout.active_rollout(apartment, unit)
    txn = Txn()
    if keep is None:
        if holder is not None:
            _guard(txn, key, holder).delete(key)
        return Reconciled(txn, None)
    if held is None:
        _guard(txn, key, holder).put(key, encode(ActiveRolloutRecord(keep.rollout_id,
                                                                     keep.created_at)))
    failed = []
    for record, revision in history:
        if record.active and record.rollout_id != keep.rollout_id:
            ended = superseded(record, keep.rollout_id, now)
            rkey = layout.rollout(apartment, unit, record.rollout_id)
            txn.require(rkey, revision).put(rkey, encode_record(ended))
            failed.append(ended)
    return Reconciled(txn, keep, tuple(failed))
