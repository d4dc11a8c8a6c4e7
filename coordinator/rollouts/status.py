"""The rollout-status read model: one rollout as a person (or a script) reads it, pure.

Built from the committed record and, on the leader, the request windows the agents report
(a follower has none). The measured figures come from one window:

- live: an active rollout's windows since its current step began (since its current phase
  began when no traffic has moved yet), merged per version over every host, and per host;
- else recorded: the current step's measurement, or the latest step that has one (what the
  engine judged); recorded steps carry no per-host figures;
- else nothing: every measured figure is None.

Each version gets its target share (the record's split; a version only measured gets 0)
and its measured share of the window's requests. A judged rollout also gets its success
criteria checked against the new version's figures of that window. Numbers stay numbers
here; the converter and the views decide how to print them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common.latency import LatencySketch
from common.rollout_policy import Window
from common.stream_messages import MetricsWindow
from coordinator.rollouts.record import Measurement, RolloutRecord, StepRecord

__all__ = [
    "CriterionCheck",
    "RolloutStatus",
    "Traffic",
    "check_criteria",
    "merge_windows",
    "rollout_status",
]


@dataclass(frozen=True)
class Traffic:
    """One version's traffic over the status window, over every host or on one host."""

    version: str
    host_id: str = ""
    """Empty: merged over every host."""
    target_percent: float = 0.0
    """Share of requests the route sends to this version (0..100)."""
    measured_percent: float | None = None
    """Share of the window's requests (on this host) that this version served."""
    figures: Measurement | None = None
    """What it served over the window (None: nothing measured)."""


@dataclass(frozen=True)
class CriterionCheck:
    """One success criterion against the judged version's figures."""

    name: str
    """error_rate (0..1), latency_p95_ms, throughput_rps or requests."""
    bound: str
    """``max`` (the measured figure must not exceed the threshold) or ``min``."""
    threshold: float | None
    """None: the criterion is not set."""
    measured: float | None
    verdict: str
    """pass, fail, no data, not set."""


@dataclass(frozen=True)
class RolloutStatus:
    record: RolloutRecord
    total_steps: int
    """Traffic steps of the whole rollout (``record.steps`` holds those reached so far)."""
    split: tuple[Traffic, ...] = ()
    """Per version, merged over every host, sorted by version."""
    hosts: tuple[Traffic, ...] = ()
    """Per host and version (live windows only), sorted by host then version."""
    checks: tuple[CriterionCheck, ...] = ()
    measured_since: float | None = None
    """Start of the window the figures cover (None: nothing measured)."""
    measured_live: bool = False
    measured_step: int | None = None
    """Index of the step whose recorded figures are shown (None: live, or nothing)."""


def merge_windows(windows: Iterable[MetricsWindow], since: float, now: float) -> Window:
    """The windows (any hosts and instances) whose middle falls after ``since``, as one:
    counts add, sketches merge, and the duration runs from ``since`` to the latest end."""
    sketch = LatencySketch()
    requests = errors = 0
    sample_every = 1
    end = since
    for w in windows:
        if (w.start + w.end) / 2 < since:
            continue
        requests += w.requests
        errors += min(w.errors, w.requests)
        end = max(end, w.end)
        sample_every = max(sample_every, w.sample_every)
        if w.latency is not None:
            sketch.merge(w.latency)
    return Window(requests, errors, sketch, max(0.0, max(end, now) - since), sample_every)


def check_criteria(record: RolloutRecord, judged: Measurement | None) -> tuple[CriterionCheck, ...]:
    """The success criteria of a judged rollout against ``judged`` (the new version's
    figures); nothing for a rollout whose steps are not judged on metrics."""
    if not record.settings.judged:
        return ()
    criteria = record.settings.criteria
    requests = judged.requests if judged is not None else 0
    enough = requests >= criteria.min_requests

    def check(name: str, bound: str, threshold: float, measured: float | None) -> CriterionCheck:
        limit = threshold if threshold > 0 or name == "error_rate" else None
        if limit is None:
            verdict = "not set"
        elif measured is None or not enough:
            verdict = "no data"
        elif bound == "max":
            verdict = "pass" if measured <= limit else "fail"
        else:
            verdict = "pass" if measured >= limit else "fail"
        return CriterionCheck(name, bound, limit, measured, verdict)

    return (
        check("error_rate", "max", criteria.max_error_rate,
              judged.error_rate if judged is not None else None),
        check("latency_p95_ms", "max", criteria.max_latency_p95_ms,
              judged.p95_ms if judged is not None else None),
        check("throughput_rps", "min", criteria.min_throughput_rps,
              judged.throughput_rps if judged is not None else None),
        CriterionCheck("requests", "min", float(criteria.min_requests),
                       float(requests) if judged is not None else None,
                       "pass" if enough else "no data"),
    )


def _target(record: RolloutRecord) -> dict[str, float]:
    if not record.has_stable and record.terminal and not record.traffic_moved:
        return {}  # a first deploy that never got traffic: nothing routes to it
    return record.split()


def _shares(target: Mapping[str, float], measured: Mapping[str, Measurement],
            host_id: str = "") -> list[Traffic]:
    total = sum(m.requests for m in measured.values())
    out = []
    for version in sorted(set(target) | set(measured)):
        figures = measured.get(version)
        share = None
        if total and version in measured:
            share = round(100.0 * measured[version].requests / total, 3)
        out.append(Traffic(version, host_id, target.get(version, 0.0), share, figures))
    return out


def _recorded_step(record: RolloutRecord) -> StepRecord | None:
    current = record.current_step()
    if current is not None and current.canary is not None:
        return current
    measured = [s for s in record.steps if s.canary is not None]
    return measured[-1] if measured else None


def _live_since(record: RolloutRecord) -> float:
    return record.window_start if record.traffic_moved else record.phase_started_at


def rollout_status(record: RolloutRecord, windows: Iterable[MetricsWindow] = (),
                   now: float = 0.0) -> RolloutStatus:
    """The status of ``record``; ``windows`` are the unit's request windows the leader
    holds (only an active rollout uses them), ``now`` the end of the live window."""
    total_steps = len(record.settings.step_plan().steps)
    if record.active:
        live = _live_status(record, windows, now, total_steps)
        if live is not None:
            return live
    target = _target(record)
    step = _recorded_step(record)
    if step is None or step.canary is None:
        return RolloutStatus(record, total_steps, tuple(_shares(target, {})),
                             checks=check_criteria(record, None))
    recorded = {record.to_version: step.canary}
    if step.stable is not None and record.has_stable:
        recorded[record.from_version] = step.stable
    return RolloutStatus(record, total_steps, tuple(_shares(target, recorded)),
                         checks=check_criteria(record, step.canary),
                         measured_since=step.started_at, measured_step=step.index)


def _live_status(record: RolloutRecord, windows: Iterable[MetricsWindow], now: float,
                 total_steps: int) -> RolloutStatus | None:
    """From the windows since the current step (or phase) began; None without a request."""
    since = _live_since(record)
    versions = sorted({record.to_version, *([record.from_version] if record.has_stable else [])})
    by_host: dict[str, dict[str, list[MetricsWindow]]] = {}
    for w in windows:
        if w.version in versions and (w.start + w.end) / 2 >= since:
            by_host.setdefault(w.host_id, {}).setdefault(w.version, []).append(w)
    merged = {v: Measurement.of(merge_windows(
        (w for found in by_host.values() for w in found.get(v, ())), since, now))
        for v in versions}
    if not any(m.requests for m in merged.values()):
        return None
    target = _target(record)
    hosts = [share
             for host_id, found in sorted(by_host.items())
             for share in _shares(target, {
                 v: Measurement.of(merge_windows(ws, since, now)) for v, ws in found.items()
             }, host_id)]
    return RolloutStatus(record, total_steps, tuple(_shares(target, merged)), tuple(hosts),
                         check_criteria(record, merged[record.to_version]), since, True)
