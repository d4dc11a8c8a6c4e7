"""When a lost host is forgotten: a pure decision over what etcd says of lost hosts.

A host the leader declared lost (coordinator/fleet/liveness.py) keeps its record in etcd so
that it comes back as ``host.returned`` and its stranded instances can be placed elsewhere
(coordinator/fleet/healing.py). Once it has been lost for ``forget_after`` seconds and no
instance is placed on it any more, its records are removed (coordinator/fleet/forgetter.py);
if it ever returns it registers again as a new host.

The clock is the host record's ``status_changed_at``: the wall time the leader wrote when it
declared the host lost, so a leader change neither restarts the wait nor ends it early, and
nothing is written per heartbeat. A lost record without that time (written by an older
release) is stamped with the current time first, which starts its wait. A host still holding
instances (no room elsewhere yet) is kept, with the reason; so is one with an open stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ForgetAction", "ForgetDecision", "LostHost", "plan_forgetting"]


@dataclass(frozen=True)
class LostHost:
    """What the leader knows of one host whose record says lost."""

    host_id: str
    lost_since: float
    """Epoch seconds it was declared lost (the record's status_changed_at; 0: unknown)."""
    placed: int
    """Instances still placed on it."""
    connected: bool = False
    """It has an open stream to this leader (it is registering again)."""
    paused: int = 0
    """Of ``placed``, instances an operator paused (they stay until resumed)."""


class ForgetAction(StrEnum):
    FORGET = "forget"
    """Remove its records from etcd."""
    KEEP = "keep"
    """Past the wait, but something still needs the record (``reason``)."""
    STAMP = "stamp"
    """Its record has no lost time: write the current time, which starts the wait."""


@dataclass(frozen=True)
class ForgetDecision:
    host_id: str
    action: ForgetAction
    lost_for: float
    """Seconds since it was declared lost (0 when unknown)."""
    reason: str


def plan_forgetting(hosts: Iterable[LostHost], now: float,
                    forget_after: float) -> list[ForgetDecision]:
    """A decision for each lost host that is past the wait or has no lost time, in host id
    order; hosts still within the wait need nothing and get none."""
    decisions = []
    for host in sorted(hosts, key=lambda h: h.host_id):
        if host.lost_since <= 0:
            decisions.append(ForgetDecision(host.host_id, ForgetAction.STAMP, 0.0,
                                            "its record does not say when it was lost"))
            continue
        lost_for = now - host.lost_since
        if lost_for < forget_after:
            continue
        if host.placed:
            why = (f"{host.paused} of them paused: they stay until resumed, then are placed "
                   "elsewhere" if host.paused else "no room elsewhere yet")
            decisions.append(ForgetDecision(
                host.host_id, ForgetAction.KEEP, lost_for,
                f"{host.placed} instance(s) are still placed on it ({why})"))
        elif host.connected:
            decisions.append(ForgetDecision(host.host_id, ForgetAction.KEEP, lost_for,
                                            "it is connected again"))
        else:
            decisions.append(ForgetDecision(
                host.host_id, ForgetAction.FORGET, lost_for,
                f"lost for {lost_for:.0f}s (forget_host_after {forget_after:.0f}s) with no "
                "instance left on it"))
    return decisions
