"""Protobuf at the edge: Deploy settings in, the rollout status (RolloutInfo) out."""

from __future__ import annotations

from dataclasses import replace

from google.protobuf import timestamp_pb2

from common.bluegreen import SwitchMode
from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.proto_values import duration_from_pb, duration_to_pb, timestamp_to_pb
from common.rollout_policy import SuccessCriteria
from coordinator.rollouts.admission import DeployRequest
from coordinator.rollouts.record import RETRY, Control, RolloutRecord, StepRecord
from coordinator.rollouts.settings import CheckSpec, RolloutSettings, Strategy
from coordinator.rollouts.status import CriterionCheck, RolloutStatus, Traffic

__all__ = [
    "RETRY",
    "check_from_pb",
    "check_to_pb",
    "control_from_pb",
    "deploy_from_pb",
    "rollout_info",
    "settings_from_pb",
]


_STRATEGY_IN = {types_pb2.STRATEGY_UNSPECIFIED: Strategy.BLUE_GREEN,
                types_pb2.STRATEGY_BLUE_GREEN: Strategy.BLUE_GREEN,
                types_pb2.STRATEGY_CANARY: Strategy.CANARY}
_STRATEGY_OUT = {Strategy.BLUE_GREEN: types_pb2.STRATEGY_BLUE_GREEN,
                 Strategy.CANARY: types_pb2.STRATEGY_CANARY,
                 Strategy.ROLLBACK: types_pb2.STRATEGY_ROLLBACK,
                 Strategy.INITIAL: types_pb2.STRATEGY_INITIAL}
_SWITCH_IN = {types_pb2.SWITCH_MODE_UNSPECIFIED: SwitchMode.IMMEDIATE,
              types_pb2.SWITCH_MODE_IMMEDIATE: SwitchMode.IMMEDIATE,
              types_pb2.SWITCH_MODE_GRADUAL: SwitchMode.GRADUAL,
              types_pb2.SWITCH_MODE_CANARY: SwitchMode.CANARY}
_CONTROLS = {admin_pb2.ROLLOUT_CONTROL_PROMOTE: Control.PROMOTE,
             admin_pb2.ROLLOUT_CONTROL_ABORT: Control.ABORT,
             admin_pb2.ROLLOUT_CONTROL_PAUSE: Control.PAUSE,
             admin_pb2.ROLLOUT_CONTROL_RESUME: Control.RESUME}


def _timestamp(epoch: float | None) -> timestamp_pb2.Timestamp | None:
    """None (the field stays unset) for an unknown time."""
    return timestamp_to_pb(epoch) if epoch else None


def control_from_pb(action: int) -> Control | str:
    if action == admin_pb2.ROLLOUT_CONTROL_RETRY:
        return RETRY
    found: Control | None = _CONTROLS.get(action)  # type: ignore[call-overload]
    if found is None:
        raise InvalidArgument("action must be promote, abort, pause, resume or retry",
                              field="action")
    return found


def check_from_pb(check: types_pb2.IntegrationCheck) -> CheckSpec | None:
    """An integration check of a Deploy request (None when it names no check)."""
    kind = check.WhichOneof("check")
    if kind == "http":
        return CheckSpec(path=check.http.path, expect_status=check.http.expect_status or 200,
                         expect_body_contains=check.http.expect_body_contains)
    if kind == "command":
        return CheckSpec(command=check.command)
    if kind == "exec":
        e = check.exec
        timeout = duration_from_pb(e.timeout) if e.timeout.seconds or e.timeout.nanos else (
            CheckSpec.timeout_s)
        return CheckSpec(argv=tuple(e.argv), expect_exit_code=e.expect_exit_code,
                         expect_output_contains=e.expect_output_contains, timeout_s=timeout)
    return None


def check_to_pb(check: CheckSpec) -> types_pb2.IntegrationCheck:
    if check.path:
        return types_pb2.IntegrationCheck(http=types_pb2.HttpCheck(
            path=check.path, expect_status=check.expect_status,
            expect_body_contains=check.expect_body_contains))
    return types_pb2.IntegrationCheck(exec=types_pb2.CommandCheck(
        argv=list(check.exec_argv), expect_exit_code=check.expect_exit_code,
        expect_output_contains=check.expect_output_contains,
        timeout=duration_to_pb(check.timeout_s)))


def deploy_from_pb(req: admin_pb2.DeployRequest) -> DeployRequest:
    return DeployRequest(req.apartment, req.unit, req.version, settings_from_pb(req),
                         req.building, keep_replicas=req.replicas == 0,
                         sticky=req.sticky if req.HasField("sticky") else None)


def settings_from_pb(req: admin_pb2.DeployRequest) -> RolloutSettings:
    """Settings from a Deploy request; unset fields keep the defaults (a canary removes
    the old version one step delay after its last step)."""
    strategy = _STRATEGY_IN.get(req.strategy)
    if strategy is None:
        raise InvalidArgument("strategy must be blue-green or canary", field="strategy")
    base = RolloutSettings(strategy=strategy, replicas=req.replicas or 1)
    values: dict[str, object] = {}
    canary, bg, crit = req.canary, req.blue_green, req.criteria
    if canary.steps:
        values["steps"] = tuple(canary.steps)
    for name, d in (("monitor_s", canary.monitor), ("step_delay_s", canary.step_delay),
                    ("inconclusive_deadline_s", canary.inconclusive_deadline),
                    ("warmup_s", bg.warmup), ("cleanup_delay_s", bg.cleanup_delay),
                    ("gradual_step_delay_s", bg.gradual_step_delay)):
        if d.seconds or d.nanos:
            values[name] = duration_from_pb(d)
    if strategy is Strategy.CANARY and "cleanup_delay_s" not in values:
        # a canary's last move (removing the old version) waits one step delay
        values["cleanup_delay_s"] = values.get("step_delay_s", base.step_delay_s)
    if strategy is Strategy.BLUE_GREEN:
        values["switch"] = _SWITCH_IN.get(bg.switch_mode, SwitchMode.IMMEDIATE)
        values["manual_promotion"] = bg.manual_promotion
        if bg.gradual_steps:
            values["gradual_steps"] = bg.gradual_steps
        if bg.performance_requests:
            values["performance_requests"] = bg.performance_requests
        if bg.max_latency_p95.seconds or bg.max_latency_p95.nanos:
            values["max_latency_p95_ms"] = duration_from_pb(bg.max_latency_p95) * 1000
        values["checks"] = tuple(c for c in map(check_from_pb, bg.checks) if c is not None)
    criteria = SuccessCriteria()
    if crit.max_error_rate:
        criteria = replace(criteria, max_error_rate=crit.max_error_rate)
    if crit.max_latency_p95.seconds or crit.max_latency_p95.nanos:
        criteria = replace(criteria,
                           max_latency_p95_ms=duration_from_pb(crit.max_latency_p95) * 1000)
    if crit.min_throughput_rps:
        criteria = replace(criteria, min_throughput_rps=crit.min_throughput_rps)
    if crit.min_requests:
        criteria = replace(criteria, min_requests=int(crit.min_requests))
    values["criteria"] = criteria
    return replace(base, **values)  # type: ignore[arg-type]


def _traffic(t: Traffic) -> types_pb2.VersionTraffic:
    out = types_pb2.VersionTraffic(version=t.version, host_id=t.host_id,
                                   target_percent=t.target_percent)
    if t.measured_percent is not None:
        out.measured_percent = t.measured_percent
    m = t.figures
    if m is not None:
        out.requests, out.errors = m.requests, m.errors
        out.window.CopyFrom(duration_to_pb(m.duration_s))
        for name, value in (("error_rate", m.error_rate), ("rate_rps", m.throughput_rps),
                            ("p50_ms", m.p50_ms), ("p95_ms", m.p95_ms), ("p99_ms", m.p99_ms)):
            if value is not None:
                setattr(out, name, value)
    return out


def _step(record: RolloutRecord, step: StepRecord) -> types_pb2.RolloutStep:
    out = types_pb2.RolloutStep(
        index=step.index, target_percent=float(step.percent), outcome=step.outcome,
        started_at=_timestamp(step.started_at), ended_at=_timestamp(step.ended_at),
        reasons=list(step.reasons),
    )
    if step.canary is not None:
        out.canary.CopyFrom(_traffic(Traffic(record.to_version, "", float(step.percent),
                                             figures=step.canary)))
    if step.stable is not None:
        out.stable.CopyFrom(_traffic(Traffic(record.from_version, "",
                                             100.0 - step.percent, figures=step.stable)))
    return out


def _check(c: CriterionCheck) -> types_pb2.CriterionCheck:
    out = types_pb2.CriterionCheck(name=c.name, bound=c.bound, verdict=c.verdict)
    if c.threshold is not None:
        out.threshold = c.threshold
    if c.measured is not None:
        out.measured = c.measured
    return out


def rollout_info(status: RolloutStatus) -> types_pb2.RolloutInfo:
    record, s = status.record, status.record.settings
    info = types_pb2.RolloutInfo(
        rollout_id=record.rollout_id, apartment=record.apartment, unit=record.unit,
        from_version=record.from_version, to_version=record.to_version,
        building=record.building,
        strategy=_STRATEGY_OUT.get(s.strategy, types_pb2.STRATEGY_UNSPECIFIED),
        phase=record.public_phase(), current_step=record.step_index,
        steps=[_step(record, st) for st in record.steps],
        split=[_traffic(t) for t in status.split], hosts=[_traffic(t) for t in status.hosts],
        total_steps=status.total_steps, checks=[_check(c) for c in status.checks],
        measured_since=_timestamp(status.measured_since), measured_live=status.measured_live,
        started_at=_timestamp(record.created_at), ended_at=_timestamp(record.ended_at),
        reason=record.reason, replicas=s.replicas,
        canary=types_pb2.CanarySettings(
            steps=list(s.steps if s.judged else s.traffic_steps()),
            monitor=duration_to_pb(s.monitor_s), step_delay=duration_to_pb(s.step_delay_s),
            inconclusive_deadline=duration_to_pb(s.inconclusive_deadline_s)),
        criteria=types_pb2.SuccessCriteria(
            max_error_rate=s.criteria.max_error_rate,
            max_latency_p95=duration_to_pb(s.criteria.max_latency_p95_ms / 1000),
            min_throughput_rps=s.criteria.min_throughput_rps,
            min_requests=s.criteria.min_requests),
    )
    if status.measured_step is not None:
        info.measured_step = status.measured_step
    if s.strategy is Strategy.BLUE_GREEN:
        info.blue_green.CopyFrom(types_pb2.BlueGreenSettings(
            switch_mode={SwitchMode.IMMEDIATE: types_pb2.SWITCH_MODE_IMMEDIATE,
                         SwitchMode.GRADUAL: types_pb2.SWITCH_MODE_GRADUAL,
                         SwitchMode.CANARY: types_pb2.SWITCH_MODE_CANARY}[s.switch],
            warmup=duration_to_pb(s.warmup_s), cleanup_delay=duration_to_pb(s.cleanup_delay_s),
            gradual_steps=s.gradual_steps, manual_promotion=s.manual_promotion,
            gradual_step_delay=duration_to_pb(s.gradual_step_delay_s),
            performance_requests=s.performance_requests,
            checks=[check_to_pb(c) for c in s.checks]))
        if s.max_latency_p95_ms is not None:
            info.blue_green.max_latency_p95.CopyFrom(duration_to_pb(s.max_latency_p95_ms / 1000))
    return info
