"""What to do about escalated instances: a pure decision over the recorded state (no I/O).

An agent escalates an instance when its own retries are spent (common/recovery.py): the
instance stays in ``error`` on its host. The coordinator then

1. re-places it once on another host that fits (the same placement rules; its own host is
   avoided), naming why on the new record (``InstanceRecord.after_escalation``), so a new
   leader reads that the re-placement was done;
2. if that replacement escalates too, marks the version failing for the unit (a version
   that crash-loops wherever it runs is not a host problem): its instances are not
   re-placed again.

Units with an active rollout are left alone: the rollout's own analysis judges (and rolls
back) an escalated canary.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from coordinator.state.records import InstanceRecord

__all__ = ["EscalationAction", "EscalationStep", "plan_escalations"]

UnitKey = tuple[str, str]


class EscalationStep(StrEnum):
    REPLACE = "replace"
    """Place the instance once more, on another host."""
    MARK_FAILING = "mark_failing"
    """Its re-placement escalated too: mark the version failing for the unit."""


@dataclass(frozen=True)
class EscalationAction:
    step: EscalationStep
    instance: InstanceRecord
    reason: str


def plan_escalations(
    instances: Iterable[InstanceRecord],
    escalated: Mapping[str, str],
    in_rollout: Collection[UnitKey],
    failing: Mapping[UnitKey, Mapping[str, str]],
) -> list[EscalationAction]:
    """The marks first, then one replacement per escalated instance of a version that is
    not failing, each in instance-id order.

    ``escalated``: instance id -> why its agent gave up (only instances still in ``error``);
    ``in_rollout``: units with an active rollout; ``failing``: each unit's versions already
    marked failing (version -> why).
    """
    candidates = [
        inst for inst in sorted(instances, key=lambda i: i.instance_id)
        if inst.instance_id in escalated and inst.unit_key not in in_rollout
        and inst.version not in failing.get(inst.unit_key, {})
    ]
    actions: list[EscalationAction] = []
    marked: set[tuple[UnitKey, str]] = set()
    for inst in candidates:  # first the marks: a failing version gets no more replacements
        version = (inst.unit_key, inst.version)
        if inst.after_escalation and version not in marked:
            marked.add(version)
            actions.append(EscalationAction(
                EscalationStep.MARK_FAILING, inst,
                f"version {inst.version} escalated again after it was re-placed: "
                f"{inst.instance_id} on {inst.host_id} ({escalated[inst.instance_id]}); "
                f"before that {inst.after_escalation}"))
    for inst in candidates:
        if (inst.unit_key, inst.version) not in marked:
            actions.append(EscalationAction(
                EscalationStep.REPLACE, inst,
                f"{inst.instance_id} escalated on {inst.host_id}: {escalated[inst.instance_id]}"))
    return actions
