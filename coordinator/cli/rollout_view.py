"""What `rollout status`, `rollout history` and `deploy --wait` show about a rollout.

Every figure comes from the coordinator's rollout status (RolloutInfo): the split, the
per-host figures, the step figures and the criteria checks are filled there; this module
only lays them out (a figure the server left unset shows as "-").
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from common.gen.landlord.v1 import admin_pb2, types_pb2
from coordinator.cli.durations import format_duration, seconds_from_proto
from coordinator.cli.output import enum_label, format_time
from coordinator.cli.tables import instances_table

__all__ = [
    "history_table",
    "rollout_summary",
    "rollout_view",
]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} rps"


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def _rate(value: float | None) -> str:
    """An error rate (a fraction) as a percentage."""
    return "-" if value is None else f"{value:.2%}"


def _opt(message: Message, name: str) -> float | None:
    """An optional figure of a message, None when the server left it unset."""
    return getattr(message, name) if message.HasField(name) else None


_VERDICT_STYLE = {"pass": "green", "fail": "bold red", "no data": "yellow", "not set": "dim"}
_PHASE_STYLE = {"promoted": "bold green", "rolled_back": "bold red", "failed": "bold red"}


def rollout_summary(rollout: types_pb2.RolloutInfo) -> str:
    """One line: unit, versions, phase, step and split (for logs and non-terminal output)."""
    split = ", ".join(
        f"{w.version} {w.target_percent:g}%/{_percent(_opt(w, 'measured_percent'), 0)}"
        for w in rollout.split
    )
    step = f"step {rollout.current_step + 1}/{rollout.total_steps}" if rollout.steps else ""
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
        grid.add_row("step", f"{rollout.current_step + 1} of {rollout.total_steps}{target}")
    grid.add_row("building", f"{rollout.building or '-'}, {rollout.replicas} replica(s)")
    grid.add_row("started", format_time(rollout.started_at))
    if rollout.ended_at.seconds:
        grid.add_row("ended", format_time(rollout.ended_at))
    if rollout.reason:
        grid.add_row("reason", rollout.reason)
    return grid


def _measured_title(rollout: types_pb2.RolloutInfo) -> str:
    if rollout.HasField("measured_step"):
        return f"traffic (measured: as recorded in step {rollout.measured_step + 1})"
    if rollout.measured_live:
        return f"traffic (measured: live since {format_time(rollout.measured_since)})"
    return "traffic (measured: nothing yet)"


def _split_table(rollout: types_pb2.RolloutInfo) -> Table:
    table = Table(title=_measured_title(rollout), title_justify="left", show_edge=False,
                  pad_edge=False)
    for column in ("VERSION", "TARGET", "MEASURED", "REQUESTS", "ERROR RATE", "RATE", "P95"):
        table.add_column(column)
    for w in rollout.split:
        table.add_row(w.version, f"{w.target_percent:g}%", _percent(_opt(w, "measured_percent")),
                      str(w.requests), _rate(_opt(w, "error_rate")), _rps(_opt(w, "rate_rps")),
                      _ms(_opt(w, "p95_ms")))
    return table


def _hosts_table(rollout: types_pb2.RolloutInfo) -> Table:
    table = Table(title="traffic by host", title_justify="left", show_edge=False,
                  pad_edge=False)
    for column in ("HOST", "VERSION", "TARGET", "MEASURED", "REQUESTS", "ERROR RATE", "RATE",
                   "P95"):
        table.add_column(column)
    for w in sorted(rollout.hosts, key=lambda h: (h.host_id, h.version)):
        table.add_row(w.host_id, w.version, f"{w.target_percent:g}%",
                      _percent(_opt(w, "measured_percent")), str(w.requests),
                      _rate(_opt(w, "error_rate")), _rps(_opt(w, "rate_rps")),
                      _ms(_opt(w, "p95_ms")))
    return table


def _steps_table(rollout: types_pb2.RolloutInfo) -> Table:
    table = Table(title="steps", title_justify="left", show_edge=False, pad_edge=False)
    columns = ("", "#", "TARGET", "OUTCOME", "REQUESTS", "ERROR RATE", "P95", "STABLE P95",
               "WHY")
    for column in columns:
        table.add_column(column, overflow="fold")
    for step in sorted(rollout.steps, key=lambda s: s.index):
        canary, stable = step.canary, step.stable
        table.add_row(
            ">" if step.index == rollout.current_step else "",
            str(step.index + 1),
            f"{step.target_percent:g}%",
            step.outcome or "-",
            str(canary.requests) if step.HasField("canary") else "-",
            _rate(_opt(canary, "error_rate")),
            _ms(_opt(canary, "p95_ms")),
            _ms(_opt(stable, "p95_ms")),
            "; ".join(step.reasons) or "-",
        )
    return table


_CRITERIA = {
    "error_rate": ("error rate", _rate),
    "latency_p95_ms": ("latency p95", _ms),
    "throughput_rps": ("throughput", _rps),
    "requests": ("sample size", lambda v: "-" if v is None else f"{v:.0f} requests"),
}


def _criteria_table(rollout: types_pb2.RolloutInfo) -> Table:
    table = Table(title="criteria", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("CRITERION", "THRESHOLD", "MEASURED", "VERDICT"):
        table.add_column(column)
    for check in rollout.checks:
        name, shown = _CRITERIA.get(check.name, (check.name, lambda v: f"{v:g}"))
        limit = _opt(check, "threshold")
        threshold = "not set" if limit is None else (
            f"{'<=' if check.bound == 'max' else '>='} {shown(limit)}")
        verdict = Text(check.verdict, style=_VERDICT_STYLE.get(check.verdict, ""))
        table.add_row(name, threshold, shown(_opt(check, "measured")), verdict)
    return table


def rollout_view(
    rollout: types_pb2.RolloutInfo, instances: Sequence[types_pb2.InstanceStatus] = ()
) -> RenderableType:
    """The full status: header, traffic split (merged and per host), steps, criteria, and
    instances per host."""
    parts: list[RenderableType] = [_header(rollout)]
    if rollout.split:
        parts += [Text(""), _split_table(rollout)]
    if rollout.hosts:
        parts += [Text(""), _hosts_table(rollout)]
    if rollout.steps:
        parts += [Text(""), _steps_table(rollout)]
    if rollout.checks:
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
