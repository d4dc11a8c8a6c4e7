"""Figures of the zero-downtime benchmark from what it recorded (pure functions, no I/O).

Inputs: the load's answers (``Answer``: wall-clock times sent and answered, host
address, status, version), each host's HAProxy weight changes (``WeightChange``, same
clock, keyed by the host's address too) and the rollout records' step times (``StepTimes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from local_cluster.load import Answer
from local_cluster.report import classify_failures, share_of
from zero_downtime_watch import WeightChange

__all__ = [
    "SETTLE_S",
    "RolloutTimes",
    "StepTimes",
    "applied_at",
    "canary_off_at",
    "failure_lines",
    "holds_until",
    "last_answer_from",
    "latency_lines",
    "no_server_lines",
    "rollback_lines",
    "rollback_off",
    "rollout_lines",
    "spread_ms",
    "step_applied",
]

SLACK_S = 0.2
"""A weight change this long before a recorded step start still counts for that step (the
record's time is taken before the command is sent, so this only absorbs clock jitter)."""
TOLERANCE_PERCENT = 1.0
"""Integer weights realise a split to within 0.4 points (common/weights.py)."""


@dataclass(frozen=True)
class StepTimes:
    index: int
    target_percent: float
    outcome: str
    started_at: float
    ended_at: float
    """0.0 while the step runs."""


@dataclass(frozen=True)
class RolloutTimes:
    name: str
    strategy: str
    from_version: str
    to_version: str
    phase: str
    reason: str
    started_at: float
    ended_at: float
    steps: tuple[StepTimes, ...]


def _host_changes(changes: Sequence[WeightChange], host: str) -> list[WeightChange]:
    return [c for c in changes if c.host == host]


def applied_at(changes: Sequence[WeightChange], host: str, version: str, target: float,
               since: float, until: float) -> WeightChange | None:
    """The first change on ``host`` in [since - SLACK_S, until] that sends ``target`` % of new
    requests to ``version``: when that host's HAProxy applied the step."""
    for change in _host_changes(changes, host):
        if since - SLACK_S <= change.at <= until:
            share = change.share(version)
            if share is not None and abs(share - target) <= TOLERANCE_PERCENT:
                return change
    return None


def canary_off_at(changes: Sequence[WeightChange], host: str, version: str,
                  since: float) -> WeightChange | None:
    """The first change on ``host`` at or after ``since`` (- SLACK_S) where ``version`` gets
    no new request: when that host's HAProxy stopped sending to it."""
    for change in _host_changes(changes, host):
        if change.at >= since - SLACK_S and change.weights.get(version, 0) == 0:
            return change
    return None


SETTLE_S = 5.0
"""After a rollout ended, how long its last answers may still arrive (in flight)."""


def last_answer_from(answers: Sequence[Answer], host: str, version: str,
                     since: float, until: float = float("inf")) -> float | None:
    """The last answer by ``version`` through ``host`` between the two times (the same
    version may be deployed again later)."""
    return max((a.at for a in answers if a.host == host and a.version == version
                and since <= a.at <= until), default=None)


def spread_ms(times: Sequence[float | None]) -> float | None:
    known = [t for t in times if t is not None]
    if len(known) < 2 or len(known) < len(times):
        return None
    return (max(known) - min(known)) * 1000.0


def _after(value: float | None) -> str:
    """Seconds after a reference moment, signed, in ms."""
    return "n/a" if value is None else f"{value * 1000.0:+.1f} ms"


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.1f}%"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("  [target met]" if ok else "  [TARGET MISSED]")


def failure_lines(answers: Sequence[Answer], bad: str, indent: str = "  ",
                  examples: int = 8) -> list[str]:
    failures = classify_failures(answers, bad)
    lines = [f"{indent}requests {len(answers)}, failed {failures.total}: "
             f"{failures.bad_version_5xx} caused by the bad version {bad} (its own 5xx), "
             f"{failures.switching} caused by switching (target 0)"
             + _verdict(failures.switching == 0)]
    switching = [a for a in answers if not a.ok
                 and not (a.status >= 500 and a.version == bad)]
    kinds: dict[str, int] = {}
    for a in switching:
        key = ("no HTTP answer (refused/reset/timeout)" if a.status == 0
               else f"HTTP {a.status} from {a.version or 'no version (proxy)'}")
        kinds[key] = kinds.get(key, 0) + 1
    for key, count in sorted(kinds.items()):
        lines.append(f"{indent}  switching failure: {count} x {key}")
    for a in switching[:examples]:
        lines.append(f"{indent}  e.g. at {a.at:.3f} host {a.host} status {a.status} "
                     f"version {a.version or '-'}")
    return lines


def holds_until(rollout: RolloutTimes, step: StepTimes, now: float) -> float:
    """When the step's split stopped being wanted: the next step's start, the failing
    evaluation, or the rollout's end (an unjudged step is recorded as passed as soon as its
    split is sent, yet its split holds until the rollout moves on)."""
    later = [s.started_at for s in rollout.steps if s.index > step.index and s.started_at]
    if later:
        return min(later)
    if step.outcome == "failed":
        return step.ended_at
    return rollout.ended_at or now


def step_applied(rollout: RolloutTimes, step: StepTimes, changes: Sequence[WeightChange],
                 hosts: Sequence[str], now: float) -> dict[str, WeightChange | None]:
    until = holds_until(rollout, step, now)
    return {h: applied_at(changes, h, rollout.to_version, step.target_percent,
                          step.started_at, until) for h in hosts}


def rollback_off(rollout: RolloutTimes, changes: Sequence[WeightChange],
                 hosts: Sequence[str]) -> tuple[float, dict[str, WeightChange | None]] | None:
    """(failing evaluation time, per host the change that stopped traffic to the canary)."""
    failed = [s for s in rollout.steps if s.outcome == "failed"]
    if not failed:
        return None
    evaluated = failed[-1].ended_at
    return evaluated, {h: canary_off_at(changes, h, rollout.to_version, evaluated)
                       for h in hosts}


def latency_lines(answers: Sequence[Answer], hosts: Sequence[str], indent: str,
                  slow_s: float = 0.5) -> list[str]:
    """Per host: p50/p99/max request time, and requests slower than ``slow_s``."""
    parts, slow = [], []
    for h in hosts:
        times = sorted(a.latency for a in answers if a.host == h)
        if not times:
            parts.append(f"{h} n/a")
            continue
        p50, p99 = times[len(times) // 2], times[min(len(times) - 1, int(0.99 * len(times)))]
        parts.append(f"{h} {p50 * 1000:.0f}/{p99 * 1000:.0f}/{times[-1] * 1000:.0f}")
        slow += [a for a in answers if a.host == h and a.latency > slow_s]
    lines = [f"{indent}request time p50/p99/max ms: " + ", ".join(parts)]
    if slow:
        lines.append(f"{indent}  {len(slow)} request(s) took over {slow_s:g} s, e.g. "
                     + "; ".join(f"{a.host} sent {a.sent:.3f} took {a.latency:.3f} s "
                                 f"(status {a.status}, {a.version or '-'})" for a in slow[:4]))
    return lines


def no_server_lines(changes: Sequence[WeightChange], hosts: Sequence[str],
                    indent: str = "  ") -> list[str]:
    """Per host: the moments its HAProxy had no server with weight for the unit (after it
    first had one) - requests then fail (503) or wait in the queue."""
    lines = []
    for h in hosts:
        mine = _host_changes(changes, h)
        gaps: list[float] = []
        served, empty_since = False, None
        for change in mine:
            total = sum(change.weights.values())
            if total and empty_since is not None:
                gaps.append(change.at - empty_since)
                empty_since = None
            if total:
                served = True
            elif served and empty_since is None:
                empty_since = change.at
        open_gap = "" if empty_since is None else f", and since {empty_since:.3f} until the end"
        lines.append(f"{indent}{h}: {len(gaps)} period(s) without any weighted server "
                     + (f"(longest {max(gaps) * 1000:.1f} ms)" if gaps else "(target 0)")
                     + open_gap)
    return lines


def rollout_lines(rollout: RolloutTimes, answers: Sequence[Answer],
                  changes: Sequence[WeightChange], hosts: Sequence[str], now: float,
                  spread_target_ms: float) -> list[str]:
    """Per step: per-host apply delay and spread, measured split per host and overall."""
    lines = [f"  {rollout.name}: {rollout.from_version or '-'} -> {rollout.to_version}, "
             f"{rollout.strategy}, {rollout.phase}"
             + (f" ({rollout.reason})" if rollout.reason and rollout.phase != "promoted"
                else "")]
    for step in rollout.steps:
        end = holds_until(rollout, step, now)
        applied = step_applied(rollout, step, changes, hosts, now)
        delays = ", ".join(
            f"{h} {_after(None if c is None else c.at - step.started_at)}"
            f"{'' if c is None else f' (±{c.error * 1000:.1f})'}" for h, c in applied.items())
        spread = spread_ms([None if c is None else c.at for c in applied.values()])
        recorded = (f"recorded {step.outcome} {_after(step.ended_at - step.started_at)} after "
                    "its start" if step.ended_at else step.outcome)
        lines.append(f"    step {step.index + 1} target {step.target_percent:g}% ({recorded}; "
                     f"split wanted for {end - step.started_at:.1f} s)")
        lines.append(f"      HAProxy applied it, after the recorded step start: {delays}")
        lines.append("      spread between hosts: "
                     + ("n/a (not seen on every host)" if spread is None
                        else f"{spread:.1f} ms (target < {spread_target_ms:g} ms)"
                        + _verdict(spread < spread_target_ms)))
        shown, window = [], []
        for h in hosts:
            seen_at = applied[h]
            start = step.started_at if seen_at is None else seen_at.at
            mine = [a for a in answers if a.host == h and start <= a.sent and a.at <= end]
            window += mine
            share, count = share_of(mine, rollout.to_version)
            shown.append(f"{h} {_pct(share).strip()} of {count}")
        overall, count = share_of(window, rollout.to_version)
        lines.append(f"      measured share of {rollout.to_version} (requests sent after "
                     "each host's apply, answered before the split was no longer wanted): "
                     f"{', '.join(shown)}; overall {_pct(overall).strip()} of {count} vs "
                     f"target {step.target_percent:g}%")
    return lines


def rollback_lines(rollout: RolloutTimes, answers: Sequence[Answer],
                   changes: Sequence[WeightChange], hosts: Sequence[str],
                   target_s: float) -> list[str]:
    """From the failing step's evaluation (its ended_at) to 100 % stable on every host."""
    found = rollback_off(rollout, changes, hosts)
    failed = [s for s in rollout.steps if s.outcome == "failed"]
    if found is None or not failed:
        return ["    no failed step in the record: no rollback to time"]
    evaluated, off = found
    bad = rollout.to_version
    seen = {h: last_answer_from(answers, h, bad, failed[-1].started_at,
                                rollout.ended_at + SETTLE_S) for h in hosts}
    lines = [f"    rollback: failing evaluation of step {failed[-1].index + 1} at "
             f"{evaluated:.3f} (its ended_at); rollout ended_at "
             f"{_after(rollout.ended_at - evaluated)}"]
    for h in hosts:
        c, last = off[h], seen[h]
        lines.append(f"      {h}: HAProxy stopped sending to {bad} at "
                     f"{_after(None if c is None else c.at - evaluated)}"
                     f"{'' if c is None else f' (±{c.error * 1000:.1f})'}; last {bad} answer "
                     f"seen by the client at "
                     f"{_after(None if last is None else last - evaluated)}")
    haproxy = [None if c is None else c.at - evaluated for c in off.values()]
    if any(v is None for v in haproxy):
        lines.append("      100 % stable on every host (HAProxy): n/a (not seen on every host)")
    else:
        worst = max(v for v in haproxy if v is not None)
        lines.append(f"      100 % stable on every host (HAProxy): {_after(worst)} "
                     f"(target < {target_s:g} s)" + _verdict(worst < target_s))
    spread = spread_ms([None if c is None else c.at for c in off.values()])
    lines.append("      spread between hosts of the rollback switch: "
                 + ("n/a" if spread is None else f"{spread:.1f} ms"))
    client = [v - evaluated for v in seen.values() if v is not None]
    lines.append("      last answer of " + bad + " seen by the client on any host: "
                 + ("none after the step began" if not client
                    else f"{_after(max(client))}"))
    return lines
