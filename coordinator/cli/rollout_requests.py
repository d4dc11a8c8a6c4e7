"""From `deploy`, `rollout` and `rollback` flags to requests, without talking to anyone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf import duration_pb2

from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.input_bounds import (
    MAX_GRADUAL_STEPS,
    MAX_PERFORMANCE_REQUESTS,
    MAX_REPLICAS,
    check_count,
    check_path,
)
from coordinator.cli.arguments import (
    NAME_PATTERN,
    parse_rate,
    parse_steps,
    parse_unit_ref,
    parse_version,
)
from coordinator.cli.durations import duration_to_proto, parse_duration

__all__ = [
    "CONTROLS",
    "STRATEGIES",
    "SWITCH_MODES",
    "DeployArgs",
    "build_control_request",
    "build_deploy_request",
    "build_get_rollout_request",
    "build_list_rollouts_request",
    "build_rollback_request",
]

T = TypeVar("T")

STRATEGIES = {"blue-green": types_pb2.STRATEGY_BLUE_GREEN, "canary": types_pb2.STRATEGY_CANARY}
SWITCH_MODES = {
    "immediate": types_pb2.SWITCH_MODE_IMMEDIATE,
    "gradual": types_pb2.SWITCH_MODE_GRADUAL,
    "canary": types_pb2.SWITCH_MODE_CANARY,
}
CONTROLS = {
    "promote": admin_pb2.ROLLOUT_CONTROL_PROMOTE,
    "abort": admin_pb2.ROLLOUT_CONTROL_ABORT,
    "pause": admin_pb2.ROLLOUT_CONTROL_PAUSE,
    "resume": admin_pb2.ROLLOUT_CONTROL_RESUME,
    "retry": admin_pb2.ROLLOUT_CONTROL_RETRY,
}


@dataclass(frozen=True)
class DeployArgs:
    """The flags of `landlord deploy`, as typed. None means "the coordinator's default"."""

    unit: str
    version: str
    building: str = ""
    """Empty: the unit's building, or the only building there is (the coordinator decides)."""
    replicas: int | None = None
    """None: as many as the unit runs now (1 for a first deploy); the coordinator decides."""
    strategy: str = "blue-green"
    # canary steps (strategy canary, or blue-green with --switch canary)
    steps: str | None = None
    monitor: str | None = None
    step_delay: str | None = None
    inconclusive_deadline: str | None = None
    # success criteria
    max_error_rate: str | None = None
    max_p95: str | None = None
    min_rps: float | None = None
    min_requests: int | None = None
    # blue-green
    switch: str | None = None
    warmup: str | None = None
    cleanup_delay: str | None = None
    gradual_steps: int | None = None
    gradual_step_delay: str | None = None
    performance_requests: int | None = None
    check_http: tuple[str, ...] = ()
    check_command: tuple[str, ...] = ()
    manual_promotion: bool = False
    sticky: bool | None = None
    """--sticky/--no-sticky; None: the unit's recorded default."""


def build_deploy_request(args: DeployArgs) -> admin_pb2.DeployRequest:
    """Validate the flags against the strategy and build the request."""
    ref = parse_unit_ref(args.unit)
    strategy = _choice(args.strategy, STRATEGIES, "--strategy")
    if args.building and not NAME_PATTERN.match(args.building):
        raise InvalidArgument(
            f"--building: {args.building!r} is not a building name", field="--building"
        )
    if args.replicas is not None:
        check_count("--replicas", args.replicas, 1, MAX_REPLICAS)
    request = admin_pb2.DeployRequest(
        apartment=ref.apartment,
        unit=ref.unit,
        version=parse_version(args.version, "version"),
        building=args.building,
        replicas=args.replicas or 0,
        strategy=strategy,
    )
    if args.sticky is not None:
        request.sticky = args.sticky
    blue_green = strategy == types_pb2.STRATEGY_BLUE_GREEN
    _refuse_foreign_flags(args, blue_green)
    uses_steps = not blue_green or args.switch == "canary"
    if uses_steps:
        _fill_canary(request.canary, args)
    if blue_green:
        _fill_blue_green(request.blue_green, args)
    _fill_criteria(request.criteria, args)
    return request


def _refuse_foreign_flags(args: DeployArgs, blue_green: bool) -> None:
    canary_only = {
        "--steps": args.steps,
        "--monitor": args.monitor,
        "--step-delay": args.step_delay,
        "--inconclusive-deadline": args.inconclusive_deadline,
    }
    blue_green_only = {
        "--switch": args.switch,
        "--warmup": args.warmup,
        "--cleanup-delay": args.cleanup_delay,
        "--gradual-steps": args.gradual_steps,
        "--gradual-step-delay": args.gradual_step_delay,
        "--performance-requests": args.performance_requests,
        "--check-http": args.check_http or None,
        "--check-command": args.check_command or None,
        "--manual-promotion": args.manual_promotion or None,
    }
    if blue_green:
        if args.switch is not None:
            _choice(args.switch, SWITCH_MODES, "--switch")
        if args.switch != "canary":
            _refuse(canary_only, "needs --strategy canary or --switch canary")
        for flag, value in (("--gradual-steps", args.gradual_steps),
                            ("--gradual-step-delay", args.gradual_step_delay)):
            if value is not None and args.switch != "gradual":
                raise InvalidArgument(f"{flag}: needs --switch gradual", field=flag)
    else:
        _refuse(blue_green_only, "applies to --strategy blue-green only")


def _refuse(flags: Mapping[str, object], why: str) -> None:
    given = [flag for flag, value in flags.items() if value is not None]
    if given:
        raise InvalidArgument(f"{given[0]}: {why}", field=given[0])


def _fill_canary(canary: types_pb2.CanarySettings, args: DeployArgs) -> None:
    if args.steps is not None:
        canary.steps.extend(parse_steps(args.steps, "--steps"))
    _set_durations(
        ("--monitor", args.monitor, canary.monitor),
        ("--step-delay", args.step_delay, canary.step_delay),
        ("--inconclusive-deadline", args.inconclusive_deadline, canary.inconclusive_deadline),
    )


def _set_durations(*given: tuple[str, str | None, duration_pb2.Duration]) -> None:
    """Each (flag, text, field): the field set to the flag's duration when it was given."""
    for flag, text, target in given:
        if text is not None:
            target.CopyFrom(_set_duration(text, flag))


def _set_duration(text: str, flag: str) -> duration_pb2.Duration:
    """A duration the coordinator will use as given: it reads 0 as "use the default"."""
    duration = duration_to_proto(parse_duration(text, flag))
    if not (duration.seconds or duration.nanos):
        raise InvalidArgument(
            f"{flag}: must be more than 0 (the coordinator reads 0 as its default); "
            "for next to nothing give 1ms",
            field=flag,
            value=text,
        )
    return duration


def _fill_blue_green(settings: types_pb2.BlueGreenSettings, args: DeployArgs) -> None:
    if args.switch is not None:
        settings.switch_mode = _choice(args.switch, SWITCH_MODES, "--switch")
    _set_durations(
        ("--warmup", args.warmup, settings.warmup),
        ("--cleanup-delay", args.cleanup_delay, settings.cleanup_delay),
        ("--max-p95", args.max_p95, settings.max_latency_p95),
        ("--gradual-step-delay", args.gradual_step_delay, settings.gradual_step_delay),
    )
    if args.gradual_steps is not None:
        settings.gradual_steps = check_count("--gradual-steps", args.gradual_steps, 1,
                                             MAX_GRADUAL_STEPS)
    if args.performance_requests is not None:
        settings.performance_requests = check_count(
            "--performance-requests", args.performance_requests, 1, MAX_PERFORMANCE_REQUESTS)
    for path in args.check_http:
        check_path("--check-http", path)
        settings.checks.add(http=types_pb2.HttpCheck(path=path, expect_status=200))
    for command in args.check_command:
        if not command.strip():
            raise InvalidArgument("--check-command: empty command", field="--check-command")
        settings.checks.add(command=command)
    settings.manual_promotion = args.manual_promotion


def _fill_criteria(criteria: types_pb2.SuccessCriteria, args: DeployArgs) -> None:
    if args.max_error_rate is not None:
        criteria.max_error_rate = parse_rate(args.max_error_rate, "--max-error-rate")
        if criteria.max_error_rate == 0:
            raise InvalidArgument(
                "--max-error-rate: must be more than 0 (the coordinator reads 0 as its "
                "default of 1%); for next to none give 0.0001",
                field="--max-error-rate",
                value=args.max_error_rate,
            )
    if args.max_p95 is not None:
        criteria.max_latency_p95.CopyFrom(_set_duration(args.max_p95, "--max-p95"))
    if args.min_rps is not None:
        if not args.min_rps >= 0:
            raise InvalidArgument(f"--min-rps: must be >= 0, got {args.min_rps}", field="--min-rps")
        criteria.min_throughput_rps = args.min_rps
    if args.min_requests is not None:
        criteria.min_requests = _positive(args.min_requests, "--min-requests")


def _positive(value: int, flag: str) -> int:
    if value < 1:
        raise InvalidArgument(f"{flag}: must be at least 1, got {value}", field=flag)
    return value


def _choice(text: str, choices: dict[str, T], flag: str) -> T:
    value = choices.get(text.strip().lower())
    if value is None:
        raise InvalidArgument(
            f"{flag}: {text!r} is not one of {', '.join(choices)}", field=flag, value=text
        )
    return value


def build_control_request(unit: str, action: str) -> admin_pb2.ControlRolloutRequest:
    ref = parse_unit_ref(unit)
    return admin_pb2.ControlRolloutRequest(
        apartment=ref.apartment, unit=ref.unit, action=_choice(action, CONTROLS, "action")
    )


def build_rollback_request(unit: str, to_version: str | None) -> admin_pb2.RollbackRequest:
    ref = parse_unit_ref(unit)
    request = admin_pb2.RollbackRequest(apartment=ref.apartment, unit=ref.unit)
    if to_version is not None:
        request.to_version = parse_version(to_version, "--to")
    return request


def build_get_rollout_request(unit: str, rollout_id: str | None) -> admin_pb2.GetRolloutRequest:
    ref = parse_unit_ref(unit)
    return admin_pb2.GetRolloutRequest(
        apartment=ref.apartment, unit=ref.unit, rollout_id=rollout_id or ""
    )


def build_list_rollouts_request(unit: str, limit: int) -> admin_pb2.ListRolloutsRequest:
    ref = parse_unit_ref(unit)
    if limit < 1:
        raise InvalidArgument(f"--limit: must be at least 1, got {limit}", field="--limit")
    return admin_pb2.ListRolloutsRequest(apartment=ref.apartment, unit=ref.unit, limit=limit)
