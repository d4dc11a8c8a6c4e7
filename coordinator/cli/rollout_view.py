"""What `rollout status`, `rollout history` and `deploy --wait` show about a rollout.

The criteria view repeats the coordinator's judgement for people (which threshold the
measured window meets); the coordinator's own verdict is the step outcome beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.proto_values import latency_from_pb, timestamp_from_pb
from coordinator.cli.durations import format_duration, seconds_from_proto
from coordinator.cli.output import enum_label, format_time
from coordinator.cli.tables import instances_table

__all__ = [
    "CriterionCheck",
    "check_criteria",
    "history_table",
    "judged_window",
    "latency_p95_ms",
    "rollout_summary",
    "rollout_view",
]


def latency_p95_ms(summary: types_pb2.LatencySummary) -> float | None:
    """The p95 latency of a window's summary, None when it holds no request."""
    sketch = latency_from_pb(summary)
    return sketch.quantile(0.95) if sketch is not None else None


def _window_seconds(window: types_pb2.MetricsWindow) -> float:
    return max(0.0, timestamp_from_pb(window.end) - timestamp_from_pb(window.start))


@dataclass(frozen=True)
class CriterionCheck:
    """One success criterion against one measured window."""

    name: str
    threshold: str
    measured: str
    verdict: str
    """"pass", "fail", "no data", or "not set"."""


def judged_window(rollout: types_pb2.RolloutInfo) -> types_pb2.MetricsWindow | None:
    """The canary window of the current step, else of the latest step that measured one."""
    by_index = {step.index: step for step in rollout.steps}
    current = by_index.get(rollout.current_step)
    if current is not None and current.HasField("canary") and current.canary.requests:
        return current.canary
    for step in sorted(rollout.steps, key=lambda s: s.index, reverse=True):
        if step.HasField("canary") and step.canary.requests:
            return step.canary
    return None


def check_criteria(
    criteria: types_pb2.SuccessCriteria, window: types_pb2.MetricsWindow | None
) -> list[CriterionCheck]:
    requests = window.requests if window is not None else 0
    checks: list[CriterionCheck] = []

    def add(name: str, threshold: str, measured: float | None, text: str, ok: bool) -> None:
        if measured is None:
            checks.append(CriterionCheck(name, threshold, "-", "no data"))
        else:
            checks.append(CriterionCheck(name, threshold, text, "pass" if ok else "fail"))

    rate = window.errors / requests if window is not None and requests else None
    add(
        "error rate",
        f"<= {criteria.max_error_rate:.2%}",
        rate,
        f"{rate:.2%}" if rate is not None else "",
        rate is not None and rate <= criteria.max_error_rate,
    )
    max_p95 = seconds_from_proto(criteria.max_latency_p95) * 1000
    p95 = latency_p95_ms(window.latency) if window is not None and requests else None
    if max_p95 <= 0:
        checks.append(CriterionCheck("latency p95", "not set", _ms(p95), "not set"))
    else:
        add("latency p95", f"<= {max_p95:g}ms", p95, _ms(p95), p95 is not None and p95 <= max_p95)
    seconds = _window_seconds(window) if window is not None else 0.0
    rps = requests / seconds if window is not None and requests and seconds > 0 else None
    if criteria.min_throughput_rps <= 0:
        checks.append(CriterionCheck("throughput", "not set", _rps(rps), "not set"))
    else:
        add(
            "throughput",
            f">= {criteria.min_throughput_rps:g} rps",
            rps,
            _rps(rps),
            rps is not None and rps >= criteria.min_throughput_rps,
        )
    if criteria.min_requests <= 0:
        checks.append(CriterionCheck("sample size", "not set", str(requests), "not set"))
    else:
        checks.append(
            CriterionCheck(
                "sample size",
                f">= {criteria.min_requests} requests",
                str(requests),
                "pass" if requests >= criteria.min_requests else "no data",
            )
        )
    return checks


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} rps"


_VERDICT_STYLE = {"pass": "green", "fail": "bold red", "no data": "yellow", "not set": "dim"}
_PHASE_STYLE = {"promoted": "bold green", "rolled_back": "bold red", "failed": "bold red"}


def rollout_summary(rollout: types_pb2.RolloutInfo) -> str:
    """One line: unit, versions, phase, step and split (for logs and non-terminal output)."""
    split = ", ".join(
        f"{w.version} {w.target_percent:g}%/{w.measured_percent:.0f}%" for w in rollout.split
    )
    step = f"step {rollout.current_step + 1}/{len(rollout.steps)}" if rollout.steps else ""
    parts = [
        f"{rollout.apartment}/{rollout.unit}",
        f"{rollout.from_version or '-'} -> {rollout.to_version}",
        rollout.phase or "-",
        step,
        f"split {split}" if split else "",
        rollout.reason,
    ]
    return "  ".join(part for part in parts if part)


def _header(rollout: types_pb2.RolloutInfo) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    strategy = enum_label(types_pb2.Strategy, rollout.strategy)
    if rollout.strategy == types_pb2.STRATEGY_BLUE_GREEN:
        switch = enum_label(types_pb2.SwitchMode, rollout.blue_green.switch_mode)
        strategy += f" (switch {'immediate' if switch == '-' else switch})"
    grid.add_row("rollout", rollout.rollout_id or "-")
    grid.add_row("unit", f"{rollout.apartment}/{rollout.unit}")
    grid.add_row("versions", f"{rollout.from_version or '(none)'} -> {rollout.to_version}")
    grid.add_row("strategy", strategy)
    grid.add_row("phase", Text(rollout.phase or "-", style=_PHASE_STYLE.get(rollout.phase, "")))
    if rollout.steps:
        by_index = {step.index: step for step in rollout.steps}
        current = by_index.get(rollout.current_step)
        target = f" ({current.target_percent:g}%)" if current is not None else ""
        grid.add_row("step", f"{rollout.current_step + 1} of {len(rollout.steps)}{target}")
    grid.add_row("building", f"{rollout.building or '-'}, {rollout.replicas} replica(s)")
    grid.add_row("started", format_time(rollout.started_at))
    if rollout.ended_at.seconds:
        grid.add_row("ended", format_time(rollout.ended_at))
    if rollout.reason:
        grid.add_row("reason", rollout.reason)
    return grid


def _split_table(rollout: types_pb2.RolloutInfo) -> Table:
    table = Table(title="traffic", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("VERSION", "TARGET", "MEASURED"):
        table.add_column(column)
    for weight in rollout.split:
        table.add_row(
            weight.version, f"{weight.target_percent:g}%", f"{weight.measured_percent:.1f}%"
        )
    return table


def _steps_table(rollout: types_pb2.RolloutInfo) -> Table:
    table = Table(title="steps", title_justify="left", show_edge=False, pad_edge=False)
    columns = ("", "#", "TARGET", "OUTCOME", "REQUESTS", "ERRORS", "P95", "STABLE P95", "WHY")
    for column in columns:
        table.add_column(column, overflow="fold")
    for step in sorted(rollout.steps, key=lambda s: s.index):
        canary, stable = step.canary, step.stable
        p95 = latency_p95_ms(canary.latency) if canary.requests else None
        stable_p95 = latency_p95_ms(stable.latency) if stable.requests else None
        table.add_row(
            ">" if step.index == rollout.current_step else "",
            str(step.index + 1),
            f"{step.target_percent:g}%",
            step.outcome or "-",
            str(canary.requests),
            str(canary.errors),
            _ms(p95),
            _ms(stable_p95),
            "; ".join(step.reasons) or "-",
        )
    return table


def _criteria_table(rollout: types_pb2.RolloutInfo) -> Table:
    table = Table(title="criteria", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("CRITERION", "THRESHOLD", "MEASURED", "VERDICT"):
        table.add_column(column)
    for check in check_criteria(rollout.criteria, judged_window(rollout)):
        verdict = Text(check.verdict, style=_VERDICT_STYLE.get(check.verdict, ""))
        table.add_row(check.name, check.threshold, check.measured, verdict)
    return table


def rollout_view(
    rollout: types_pb2.RolloutInfo, instances: Sequence[types_pb2.InstanceStatus] = ()
) -> RenderableType:
    """The full status: header, traffic split, steps, criteria, and instances per host."""
    parts: list[RenderableType] = [_header(rollout)]
    if rollout.split:
        parts += [Text(""), _split_table(rollout)]
    if rollout.steps:
        parts += [Text(""), _steps_table(rollout)]
    if rollout.strategy == types_pb2.STRATEGY_CANARY or rollout.steps:
        parts += [Text(""), _criteria_table(rollout)]
    if rollout.canary.monitor.seconds:
        monitor = format_duration(seconds_from_proto(rollout.canary.monitor))
        parts.append(Text(f"each step is monitored for {monitor}", style="dim"))
    if instances:
        ordered = sorted(instances, key=lambda i: (i.host_id, i.version, i.instance_id))
        parts += [Text(""), Text("instances by host", style="bold"), instances_table(ordered)]
    return Group(*parts)


def history_table(response: admin_pb2.ListRolloutsResponse) -> RenderableType:
    if not response.rollouts:
        return Text("no rollouts")
    table = Table(show_edge=False, pad_edge=False)
    for column in ("ROLLOUT", "FROM", "TO", "STRATEGY", "PHASE", "STARTED", "ENDED", "REASON"):
        table.add_column(column, overflow="fold")
    for rollout in response.rollouts:
        table.add_row(
            rollout.rollout_id,
            rollout.from_version or "-",
            rollout.to_version,
            enum_label(types_pb2.Strategy, rollout.strategy),
            Text(rollout.phase or "-", style=_PHASE_STYLE.get(rollout.phase, "")),
            format_time(rollout.started_at),
            format_time(rollout.ended_at),
            rollout.reason or "-",
        )
    return table
