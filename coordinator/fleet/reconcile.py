"""What to tell a host that (re)registers, from its full state and the desired state.

- An instance the host runs that is not desired on that host (a duplicate that was placed
  again elsewhere while the host was lost, or one removed while it was away) is stopped.
- A desired instance the host does not report (its agent lost it) is started again; start
  commands are idempotent, so one the agent already has costs nothing.
- Instances the host reports as stopped are left alone: stopping is already done.
- A desired instance marked paused that the host reports running is paused again, and one
  the host reports paused that is no longer marked is resumed (a pause or resume sent while
  the host was away, or lost with it): the mark in etcd is what an operator asked for.
- A desired instance recorded as collected is never started; one the host still runs (its
  collect command was lost) is collected again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.lifecycle import InstanceState
from common.stream_messages import ObservedInstance
from coordinator.state.records import InstanceRecord

__all__ = ["RegisterPlan", "plan_register"]

FINISHED_STATES = frozenset({"stopped", "collected"})


@dataclass(frozen=True)
class RegisterPlan:
    stop: tuple[str, ...]
    start: tuple[InstanceRecord, ...]
    pause: tuple[str, ...] = ()
    resume: tuple[str, ...] = ()
    collect: tuple[str, ...] = ()


def plan_register(
    host_id: str,
    reported: Sequence[ObservedInstance],
    desired: Sequence[InstanceRecord],
) -> RegisterPlan:
    wanted = {r.instance_id: r for r in desired if r.host_id == host_id}
    # an instance the host keeps collected but that was woken meanwhile counts as missing
    seen = {o.instance_id for o in reported
            if not (o.state == "collected" and o.instance_id in wanted
                    and not wanted[o.instance_id].collected)}
    stop = sorted(
        o.instance_id
        for o in reported
        if o.instance_id not in wanted and o.state not in FINISHED_STATES
    )
    start = tuple(wanted[iid] for iid in sorted(wanted)
                  if iid not in seen and not wanted[iid].collected)
    states = {o.instance_id: o.state for o in reported}
    pause = sorted(iid for iid, r in wanted.items()
                   if r.paused and states.get(iid) == InstanceState.RUNNING.value)
    resume = sorted(iid for iid, r in wanted.items()
                    if not r.paused and states.get(iid) == InstanceState.PAUSED.value)
    collect = sorted(o.instance_id for o in reported if o.instance_id in wanted
                     and wanted[o.instance_id].collected and o.state not in FINISHED_STATES)
    return RegisterPlan(tuple(stop), start, pause=tuple(pause), resume=tuple(resume),
                        collect=tuple(collect))
