"""Rollout flags the coordinator would read as "default", and how a watch prints."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from common.errors import InvalidArgument
from coordinator.cli import rollout as rollout_cli
from coordinator.cli.client import ClientSettings
from coordinator.cli.context import CliSettings, chosen_output, settings_of
from coordinator.cli.main import app
from coordinator.cli.output import OutputFormat
from coordinator.cli.rollout import watch_format
from coordinator.cli.rollout_requests import DeployArgs, build_deploy_request

runner = CliRunner()


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"strategy": "canary", "monitor": "0s"}, "--monitor"),
        ({"strategy": "canary", "step_delay": "0"}, "--step-delay"),
        ({"strategy": "canary", "inconclusive_deadline": "0ms"}, "--inconclusive-deadline"),
        ({"strategy": "canary", "max_p95": "0s"}, "--max-p95"),
        ({"warmup": "0s"}, "--warmup"),
        ({"cleanup_delay": "0m"}, "--cleanup-delay"),
        ({"max_p95": "0.0000000001s"}, "--max-p95"),  # rounds to 0 ns on the wire
    ],
)
def test_zero_durations_are_refused_not_silently_defaulted(
    changes: dict[str, object], flag: str
) -> None:
    fields: dict[str, object] = {"unit": "shop/cart", "version": "1.0.0"}
    fields.update(changes)
    with pytest.raises(InvalidArgument) as caught:
        build_deploy_request(DeployArgs(**fields))  # type: ignore[arg-type]
    assert str(caught.value).startswith(f"{flag}: must be more than 0 (the coordinator reads 0")


@pytest.mark.parametrize("rate", ["0", "0%", "0.0"])
def test_a_zero_error_rate_is_refused(rate: str) -> None:
    with pytest.raises(InvalidArgument, match="--max-error-rate: must be more than 0"):
        build_deploy_request(DeployArgs("shop/cart", "1.0.0", max_error_rate=rate))


def test_small_positive_values_go_through_as_given() -> None:
    request = build_deploy_request(
        DeployArgs(
            "shop/cart",
            "1.0.0",
            strategy="canary",
            step_delay="1ms",
            monitor="500ms",
            max_error_rate="0.0001",
        )
    )
    assert (request.canary.step_delay.seconds, request.canary.step_delay.nanos) == (0, 1_000_000)
    assert request.canary.monitor.nanos == 500_000_000
    assert request.criteria.max_error_rate == pytest.approx(0.0001)


def test_zero_duration_is_a_one_line_usage_error() -> None:
    result = runner.invoke(
        app, ["deploy", "shop/cart", "1.0.0", "--strategy", "canary", "--step-delay", "0s"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("landlord: error: --step-delay: must be more than 0")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("chosen", "terminal", "expected"),
    [
        (None, True, OutputFormat.TABLE),  # redrawn in place
        (None, False, OutputFormat.JSON),  # piped: JSON lines
        (OutputFormat.TABLE, False, OutputFormat.TABLE),  # asked for: summary lines
        (OutputFormat.JSON, True, OutputFormat.JSON),
    ],
)
def test_a_watch_prints_json_lines_into_a_pipe_unless_told_otherwise(
    chosen: OutputFormat | None, terminal: bool, expected: OutputFormat
) -> None:
    assert watch_format(chosen, terminal) is expected


@pytest.mark.parametrize(
    ("settings", "override", "expected"),
    [
        (CliSettings(ClientSettings()), None, None),
        (CliSettings(ClientSettings(), OutputFormat.JSON, output_chosen=True), None,
         OutputFormat.JSON),
        (CliSettings(ClientSettings(), OutputFormat.TABLE, output_chosen=True), None,
         OutputFormat.TABLE),
        (CliSettings(ClientSettings(), OutputFormat.JSON, output_chosen=True),
         OutputFormat.TABLE, OutputFormat.TABLE),
    ],
)
def test_the_chosen_output_is_the_commands_then_the_global_one(
    settings: CliSettings, override: OutputFormat | None, expected: OutputFormat | None
) -> None:
    ctx = typer.Context(typer.main.get_command(app), obj=settings)
    assert chosen_output(ctx, override) is expected


@pytest.mark.parametrize(
    ("args", "env", "chosen"),
    [
        ([], {}, False),
        (["--output", "table"], {}, True),
        (["-o", "json"], {}, True),
        ([], {"LANDLORD_OUTPUT": "json"}, True),
    ],
)
def test_the_root_options_record_whether_output_was_given(
    args: list[str], env: dict[str, str], chosen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[CliSettings] = []
    monkeypatch.setattr(rollout_cli, "follow_until_done",
                        lambda ctx, *_: seen.append(settings_of(ctx)))
    monkeypatch.delenv("LANDLORD_OUTPUT", raising=False)
    result = runner.invoke(app, [*args, "rollout", "status", "shop/cart", "--watch"], env=env)
    assert result.exit_code == 0, result.output
    assert [s.output_chosen for s in seen] == [chosen]
