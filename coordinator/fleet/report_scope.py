"""What an agent may speak for: the instances placed on its own host, and the traffic that
entered through its own HAProxy.

The session's host id decides (never a field of the message): a status, removal or event
about an instance the coordinator placed on another host is dropped, so one host cannot
take another's instance out of its routes or write events in its name. Request windows are
different: every host of a building routes to every instance of the building's units
(coordinator/fleet/routes.py), so a host's windows count, per server, the requests that
entered through its HAProxy, whichever host the instance runs on. Pure: the caller passes
the placement it already holds (``ClusterState.instances``), what this host was observed
running and which units it routes; no etcd reads.

Rules, per kind (the ``DropKind`` values):
- ``status``: an observed instance is kept unless it is placed on another host (an instance
  placed nowhere is one the host runs but no longer should; it is only remembered). A
  usage-only status (``AgentReport.usage``) is kept under the same rule, and only for an
  instance this host was observed running.
- ``removal``: kept for instances placed on this host or observed on it.
- ``event``: only the agents' vocabulary (``common.event_types.EventType`` without the
  ``COORDINATOR_ONLY`` types such as ``audit``, which the coordinator alone writes); one
  naming an instance is kept if that instance is placed here (and the event's unit and
  version, when given, are the instance's) or is placed nowhere and is observed here; one
  naming only a unit is kept if an instance of that unit is placed here; one naming
  neither is about the host itself and kept.
- ``window``: kept for an instance placed on any host, of a unit this host routes (the
  unit's route is sent to every host of its building), with the instance's unit and
  version, and attributed to this host: one claiming another host id is dropped (the
  stream's converter already gives every window the session's host id). A window for an
  instance placed nowhere, of another unit or version than the instance's, or of a unit
  the host does not route is dropped: it could only be forged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from common.event_types import COORDINATOR_ONLY, EventType
from common.stream_messages import AgentReport, MetricsWindow, ObservedInstance, ReportedEvent
from coordinator.state.records import InstanceRecord

__all__ = ["AGENT_EVENT_TYPES", "DropKind", "Placement", "Routes", "ScopedReport",
           "own_observations", "scope_report"]

AGENT_EVENT_TYPES = frozenset(t.value for t in EventType if t not in COORDINATOR_ONLY)
"""The event types an agent may report."""

Placement = Callable[[str], InstanceRecord | None]
"""instance id -> where the coordinator placed it (None: placed nowhere)."""

Routes = Callable[[str, str], bool]
"""(apartment, unit) -> whether this host's data plane routes the unit."""


class DropKind(StrEnum):
    STATUS = "status"
    REMOVAL = "removal"
    EVENT = "event"
    WINDOW = "window"


@dataclass(frozen=True)
class ScopedReport:
    report: AgentReport
    """The report with only what its host may say."""
    dropped: dict[DropKind, int] = field(default_factory=dict)
    """How many items of each kind were dropped (kinds with none are absent)."""
    examples: dict[DropKind, str] = field(default_factory=dict)
    """One dropped instance id (or unit) per kind, for the log."""


def _elsewhere(record: InstanceRecord | None, host_id: str) -> bool:
    return record is not None and record.host_id != host_id


def own_observations(
    observed: Iterable[ObservedInstance], host_id: str, placed: Placement
) -> tuple[list[ObservedInstance], list[ObservedInstance]]:
    """(kept, dropped): observations of instances not placed on another host."""
    kept: list[ObservedInstance] = []
    dropped: list[ObservedInstance] = []
    for obs in observed:
        (dropped if _elsewhere(placed(obs.instance_id), host_id) else kept).append(obs)
    return kept, dropped


def _same(given: str, actual: str) -> bool:
    return not given or given == actual


def _event_is_own(event: ReportedEvent, host_id: str, placed: Placement,
                  observed_here: Callable[[str], bool],
                  units_here: Callable[[], frozenset[tuple[str, str]]]) -> bool:
    if event.type not in AGENT_EVENT_TYPES:
        return False
    if event.instance_id:
        record = placed(event.instance_id)
        if record is None:
            return observed_here(event.instance_id)
        return (record.host_id == host_id and _same(event.apartment, record.apartment)
                and _same(event.unit, record.unit) and _same(event.version, record.version))
    if event.apartment or event.unit:
        return (event.apartment, event.unit) in units_here()
    return True


def _window_is_own(window: MetricsWindow, host_id: str, placed: Placement,
                   routes_here: Routes) -> bool:
    """Traffic this host's HAProxy took, to a real instance of a unit it routes."""
    record = placed(window.instance_id)
    return (record is not None and window.host_id == host_id
            and (window.apartment, window.unit, window.version)
            == (record.apartment, record.unit, record.version)
            and routes_here(record.apartment, record.unit))


def scope_report(report: AgentReport, host_id: str, placed: Placement,
                 observed_here: Collection[str],
                 units_here: Callable[[], frozenset[tuple[str, str]]],
                 routes_here: Routes) -> ScopedReport:
    """``report`` without what ``host_id`` may not say (see the module's rules).

    ``observed_here``: instance ids this host was observed running before the report;
    ``units_here``: (apartment, unit) of the instances placed on it, asked only when an
    event names a unit without an instance; ``routes_here``: whether the host routes a
    unit, asked for windows."""
    dropped: dict[DropKind, int] = {}
    examples: dict[DropKind, str] = {}

    def drop(kind: DropKind, what: str) -> None:
        dropped[kind] = dropped.get(kind, 0) + 1
        examples.setdefault(kind, what)

    changed, foreign = own_observations(report.changed, host_id, placed)
    for obs in foreign:
        drop(DropKind.STATUS, obs.instance_id)
    usage = []
    for reading in report.usage:
        iid = reading.instance_id
        if iid in observed_here and not _elsewhere(placed(iid), host_id):
            usage.append(reading)
        else:
            drop(DropKind.STATUS, iid)
    new_here = {obs.instance_id for obs in changed}

    def seen_here(iid: str) -> bool:
        return iid in observed_here or iid in new_here

    removed = []
    for iid in report.removed_instance_ids:
        record = placed(iid)
        if (record is not None and record.host_id == host_id) or (
                record is None and seen_here(iid)):
            removed.append(iid)
        else:
            drop(DropKind.REMOVAL, iid)
    events = []
    for event in report.events:
        if _event_is_own(event, host_id, placed, seen_here, units_here):
            events.append(event)
        else:
            drop(DropKind.EVENT, event.instance_id or event.type)
    windows = []
    for window in report.windows:
        if _window_is_own(window, host_id, placed, routes_here):
            windows.append(window)
        else:
            drop(DropKind.WINDOW, window.instance_id or f"{window.apartment}/{window.unit}")
    if not dropped:
        return ScopedReport(report)
    return ScopedReport(
        replace(report, changed=tuple(changed), removed_instance_ids=tuple(removed),
                events=tuple(events), windows=tuple(windows), usage=tuple(usage)),
        dropped, examples)
