"""What the load saw, judged against the rollout records (pure functions, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from local_cluster.load import Answer

__all__ = ["Failures", "PhaseResult", "StepSplit", "classify_failures", "rollback_seconds",
           "share_of", "summary_dict", "switch_seconds"]


@dataclass(frozen=True)
class StepSplit:
    index: int
    target_percent: float
    outcome: str
    measured_percent: float | None
    """Share of the new version among the answers that named a version during the step."""
    answers: int


@dataclass(frozen=True)
class Failures:
    total: int
    bad_version_5xx: int
    """5xx answered by the bad version itself (its built-in error rate)."""
    switching: int
    """No HTTP answer, or a non-200 from any other version: caused by moving traffic."""


@dataclass
class PhaseResult:
    name: str
    strategy: str
    from_version: str
    to_version: str
    phase: str
    rollout_id: str
    reason: str
    started_at: float
    ended_at: float
    cli_exit: int
    steps: list[StepSplit] = field(default_factory=list)
    requests: int = 0
    failures: Failures = field(default_factory=lambda: Failures(0, 0, 0))
    rollback_seconds: float | None = None
    switch_seconds: float | None = None
    """Blue-green: first answer from the new version to the last one from any other."""
    load_began: float = 0.0
    load_settled: float = 0.0
    """The window of load answers this phase covers: from the deploy command to 2 s of
    only the stable version's answers on every host (0.0 when no load ran)."""


def share_of(answers: Sequence[Answer], version: str) -> tuple[float | None, int]:
    """(percent of answers naming ``version`` among those naming any version, that count)."""
    named = [a for a in answers if a.version]
    if not named:
        return None, 0
    return 100.0 * sum(1 for a in named if a.version == version) / len(named), len(named)


def classify_failures(answers: Sequence[Answer], bad_version: str) -> Failures:
    failed = [a for a in answers if not a.ok]
    bad = sum(1 for a in failed if a.status >= 500 and a.version == bad_version)
    return Failures(total=len(failed), bad_version_5xx=bad, switching=len(failed) - bad)


def rollback_seconds(answers: Sequence[Answer], failed_at: float, stable: str) -> float | None:
    """Seconds from ``failed_at`` (the failing step's evaluation) to the last answer on any
    host that was not a 200 from ``stable``: after it, the load saw only stable answers on
    every host. 0 when no such answer came after ``failed_at``; None without answers."""
    after = [a for a in answers if a.at >= failed_at]
    if not after:
        return None
    unstable = [a.at for a in after if not (a.ok and a.version == stable)]
    return max(unstable) - failed_at if unstable else 0.0


def switch_seconds(answers: Sequence[Answer], new: str) -> float | None:
    """Seconds between the first answer from ``new`` and the last answer (on any host) from
    another version after it: how long both versions answered side by side."""
    first = min((a.at for a in answers if a.version == new), default=None)
    if first is None:
        return None
    last_other = max((a.at for a in answers if a.at >= first and a.version != new),
                     default=first)
    return last_other - first


def summary_dict(phases: Sequence[PhaseResult], total_requests: int, failures: Failures,
                 bad_version: str, final_version: str, final_ok: bool) -> dict[str, object]:
    """The machine-readable summary (one JSON line after ``DEMO-SUMMARY``)."""
    return {
        "total_requests": total_requests,
        "failed_requests": failures.total,
        "failed_bad_version_5xx": failures.bad_version_5xx,
        "failed_switching": failures.switching,
        "bad_version": bad_version,
        "final_version": final_version,
        "final_version_on_every_host": final_ok,
        "phases": [
            {**{k: v for k, v in asdict(p).items() if k not in ("steps", "failures")},
             "failures": asdict(p.failures), "steps": [asdict(s) for s in p.steps]}
            for p in phases
        ],
    }
