"""Command-type integration checks of green (judged from the host's RunCheck result), Deploy
checks from protobuf and back, and a step's measurements as RolloutStep.metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from rollout_sim import make_record

from common.errors import InvalidArgument, NotFound, Unavailable
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.stream_messages import CommandResult
from coordinator.api.rollout_proto import check_from_pb, rollout_info, settings_from_pb
from coordinator.rollouts.actions import RunChecks
from coordinator.rollouts.preview_checks import GreenTarget, PreviewChecker, judge_command
from coordinator.rollouts.record import Measurement, StepRecord
from coordinator.rollouts.settings import CheckSpec, RolloutSettings, Strategy
from coordinator.rollouts.status import rollout_status


def result(ok: bool = True, exit_code: int = 0, stdout: str = "", stderr: str = "",
           error: str = "", truncated: bool = False) -> CommandResult:
    return CommandResult("check:1", ok, error, exit_code, stdout, stderr, truncated,
                         timed_out=error.startswith("timed out"))


# -- the check itself ---------------------------------------------------------------------


def test_a_check_is_exactly_one_of_path_command_and_argv() -> None:
    assert CheckSpec(command="test -f /ready").exec_argv == ("sh", "-c", "test -f /ready")
    listed: Any = ["cat", "/ready"]  # as read back from JSON
    assert CheckSpec(argv=listed).exec_argv == ("cat", "/ready")
    assert CheckSpec(path="/").exec_argv == ()
    bad: dict[str, Any]
    for bad in ({}, {"path": "/", "command": "x"}, {"command": "x", "argv": ("y",)},
                {"argv": ("y",), "timeout_s": 0.0}, {"argv": ("y",), "timeout_s": 301.0}):
        with pytest.raises(InvalidArgument):
            CheckSpec(**bad)


def test_command_checks_survive_the_record_json() -> None:
    checks = (CheckSpec(argv=("cat", "/ready"), expect_exit_code=3,
                        expect_output_contains="ok", timeout_s=2.5),
              CheckSpec(command="true"), CheckSpec(path="/healthz"))
    settings = RolloutSettings(strategy=Strategy.BLUE_GREEN, checks=checks)
    again = RolloutSettings.from_dict(json.loads(json.dumps(settings.to_dict())))
    assert again.checks == checks
    # records written before command checks had these fields still read
    old = settings.to_dict()
    old["checks"] = [{"path": "", "expect_status": 200, "expect_body_contains": "",
                      "command": "true"}]
    assert RolloutSettings.from_dict(old).checks == (CheckSpec(command="true"),)


@pytest.mark.parametrize(("check", "outcome", "reason"), [
    (CheckSpec(command="true"), result(), ""),
    (CheckSpec(command="false"), result(exit_code=1, stderr="boom\n"),
     "command 'false': exit code 1, expected 0 (output: 'boom')"),
    (CheckSpec(argv=("sh", "-c", "exit 3"), expect_exit_code=3), result(exit_code=3), ""),
    (CheckSpec(argv=("cat", "/v"), expect_output_contains="1.1.0"),
     result(stdout="version 1.1.0\n"), ""),
    (CheckSpec(argv=("cat", "/v"), expect_output_contains="1.1.0"),
     result(stderr="1.1.0 on stderr"), ""),
    (CheckSpec(argv=("cat", "/v"), expect_output_contains="1.1.0"),
     result(stdout="1.0.0", truncated=True),
     "command ['cat', '/v']: output does not contain '1.1.0' (output was truncated) "
     "(output: '1.0.0')"),
    (CheckSpec(command="sleep 60", timeout_s=1.0),
     result(ok=False, exit_code=-1, error="timed out after 1s (killed)"),
     "command 'sleep 60': timed out after 1s (killed)"),
    (CheckSpec(command="true"), result(ok=False, error="unknown command 'run_check'"),
     "command 'true': unknown command 'run_check'"),
])
def test_judging_a_command_result(check: CheckSpec, outcome: CommandResult,
                                  reason: str) -> None:
    assert judge_command(check, outcome) == reason


class FakeCommands:
    """ContainerCommands answering from a table (argv -> result or error)."""

    def __init__(self, answers: dict[tuple[str, ...], CommandResult | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[str, ...], float]] = []

    async def run_check(self, instance_id: str, argv: Sequence[str],
                        timeout_s: float) -> CommandResult:
        self.calls.append((instance_id, tuple(argv), timeout_s))
        found = self.answers[tuple(argv)]
        if isinstance(found, Exception):
            raise found
        return found


async def test_the_checker_runs_command_checks_in_green_and_reports_failures() -> None:
    commands = FakeCommands({
        ("sh", "-c", "test -f /ready"): result(),
        ("false",): result(exit_code=1),
        ("sleep", "9"): NotFound("instance web-green-1 does not exist"),
    })
    checks = (CheckSpec(command="test -f /ready"), CheckSpec(argv=("false",)),
              CheckSpec(argv=("sleep", "9"), timeout_s=2.0))
    action = RunChecks("1.1.0", checks, performance_requests=0, measure_latency=False)
    report = await PreviewChecker().run(action, "127.0.0.2", 1,
                                        GreenTarget(commands, "web-green-1"))
    assert commands.calls == [("web-green-1", ("sh", "-c", "test -f /ready"), 30.0),
                              ("web-green-1", ("false",), 30.0),
                              ("web-green-1", ("sleep", "9"), 2.0)]
    assert report.failed_checks == (
        "command ['false']: exit code 1, expected 0",
        "command ['sleep', '9']: not run in web-green-1: instance web-green-1 does not exist",
    )


async def test_a_host_that_does_not_answer_is_not_greens_fault() -> None:
    commands = FakeCommands({("true",): Unavailable("host h2 did not answer")})
    action = RunChecks("1.1.0", (CheckSpec(argv=("true",)),), 0, False)
    with pytest.raises(Unavailable):  # the runner retries the action
        await PreviewChecker().run(action, "127.0.0.2", 1, GreenTarget(commands, "g1"))


async def test_without_a_healthy_green_instance_command_checks_fail() -> None:
    action = RunChecks("1.1.0", (CheckSpec(command="true"),), 0, False)
    report = await PreviewChecker().run(action, "127.0.0.2", 1, None)
    assert report.failed_checks == ("command 'true': no healthy green instance to run it in",)


# -- protobuf -----------------------------------------------------------------------------


def test_deploy_checks_from_protobuf_and_back_in_rollout_info() -> None:
    request = admin_pb2.DeployRequest(strategy=types_pb2.STRATEGY_BLUE_GREEN)
    request.blue_green.checks.add().command = "test -f /ready"
    exec_check = request.blue_green.checks.add().exec
    exec_check.argv.extend(["cat", "/version"])
    exec_check.expect_exit_code = 2
    exec_check.expect_output_contains = "1.1.0"
    exec_check.timeout.FromMilliseconds(1500)
    request.blue_green.checks.add()  # names no check: ignored
    settings = settings_from_pb(request)
    assert settings.checks == (
        CheckSpec(command="test -f /ready"),
        CheckSpec(argv=("cat", "/version"), expect_exit_code=2,
                  expect_output_contains="1.1.0", timeout_s=1.5),
    )
    info = rollout_info(rollout_status(make_record(settings)))
    back = [check_from_pb(c) for c in info.blue_green.checks]
    assert back[0] == CheckSpec(argv=("sh", "-c", "test -f /ready"))
    assert back[1] == settings.checks[1]
    default = types_pb2.IntegrationCheck(exec=types_pb2.CommandCheck(argv=["true"]))
    assert check_from_pb(default) == CheckSpec(argv=("true",), timeout_s=30.0)


def test_step_figures_are_fields_and_its_reasons_stay_sentences() -> None:
    canary = Measurement(requests=200, errors=2, duration_s=30.0, error_rate=0.01,
                         p50_ms=4.0, p95_ms=12.5, p99_ms=None, throughput_rps=6.666666666)
    stable = Measurement(requests=800, errors=0, duration_s=30.0, error_rate=0.0,
                         p95_ms=11.0)
    step = StepRecord(index=1, percent=20, started_at=1_700_000_010.0, outcome="passed",
                      ended_at=1_700_000_040.0, canary=canary, stable=stable,
                      reasons=("latency p95 12.5 ms <= max 500.0 ms",))
    record = make_record(RolloutSettings(strategy=Strategy.CANARY))
    pb = rollout_info(rollout_status(replace(record, steps=(step,)))).steps[0]
    assert list(pb.reasons) == ["latency p95 12.5 ms <= max 500.0 ms"]
    assert (pb.canary.version, pb.canary.target_percent) == ("1.1.0", 20.0)
    assert (pb.canary.requests, pb.canary.errors, pb.canary.p95_ms) == (200, 2, 12.5)
    assert pb.canary.rate_rps == 6.666666666 and pb.canary.error_rate == 0.01
    assert not pb.canary.HasField("p99_ms"), "a figure never measured stays unset"
    assert pb.canary.window.seconds == 30
    assert (pb.stable.version, pb.stable.target_percent, pb.stable.p95_ms) == (
        "1.0.0", 80.0, 11.0)
    bare = rollout_info(rollout_status(replace(
        record, steps=(StepRecord(index=0, percent=5, started_at=1.0),)))).steps[0]
    assert not bare.HasField("canary") and not bare.HasField("stable")


def test_only_http_checks_and_a_burst_need_the_entry_point() -> None:
    command = CheckSpec(argv=("true",))
    http = CheckSpec(path="/healthz")
    assert not RunChecks("1.1.0", (command,), 0, False).through_entry_point
    assert not RunChecks("1.1.0", (command,), 50, False).through_entry_point
    assert RunChecks("1.1.0", (command,), 50, True).through_entry_point
    assert RunChecks("1.1.0", (command, http), 0, False).through_entry_point
