"""The typer app end to end in-process: help, usage errors, bad input, unreachable servers.

No server is involved: every case here fails before a call, or calls a closed port.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coordinator.cli.main import app

runner = CliRunner()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stderr.startswith("landlord: error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, (fragment, stderr)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["units", "--help"],
        ["units", "publish", "--help"],
        ["deploy", "--help"],
        ["rollout", "--help"],
        ["rollout", "status", "--help"],
        ["rollout", "promote", "--help"],
        ["rollback", "--help"],
        ["hosts", "list", "--help"],
        ["instances", "list", "--help"],
        ["events", "--help"],
        ["gc", "run", "--help"],
        ["leader", "--help"],
    ],
)
def test_help_pages(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage: landlord" in result.stdout


def test_a_bare_group_shows_its_help_as_a_usage_error() -> None:
    result = runner.invoke(app, ["units"])
    assert result.exit_code == 2
    assert "publish" in result.output


def test_root_help_lists_every_command_group() -> None:
    text = runner.invoke(app, ["--help"]).stdout
    for name in ("units", "deploy", "rollout", "rollback", "hosts", "instances", "events", "gc"):
        assert name in text
    rollout_help = runner.invoke(app, ["rollout", "--help"]).stdout
    for name in ("status", "promote", "abort", "pause", "resume", "retry", "history"):
        assert name in rollout_help


@pytest.mark.parametrize(
    "args",
    [
        ["units", "nope"],
        ["units", "publish", "shop/cart", "1.0.0"],  # --image is required
        ["deploy", "shop/cart"],  # VERSION is required
        ["--output", "yaml", "units", "list"],
        ["units", "list", "--output", "xml"],
        ["deploy", "shop/cart", "1.0.0", "--building", "b", "--replicas", "many"],
    ],
)
def test_typer_usage_errors_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["units", "show", "cart"], ["unit: 'cart' is not APARTMENT/UNIT"]),
        (["units", "publish", "shop/cart", "1.0", "--image", "i"], ["not a semantic version"]),
        (
            ["units", "publish", "shop/cart", "1.0.0", "--image", "i", "--dep", "db@^^1"],
            ["--dep: version range '^^1' is not an npm range"],
        ),
        (
            ["units", "publish", "shop/cart", "1.0.0", "--image", "i", "--memory", "lots"],
            ["--memory: 'lots' is not valid"],
        ),
        (
            ["units", "publish", "shop/cart", "1.0.0", "--image", "i", "--secret-env", "s3cr"],
            ["--secret-env #1: expected KEY=VALUE"],
        ),
        (
            ["units", "publish", "shop/cart", "1.0.0", "--image", "i",
             "--secret-env-file", "/nonexistent/secrets.env"],
            ["--secret-env-file /nonexistent/secrets.env: No such file or directory"],
        ),
        (["units", "resolve", "shop/cart"], ["is not APARTMENT/UNIT@VERSION"]),
        (
            [
                "deploy",
                "shop/cart",
                "1.0.0",
                "--building",
                "b",
                "--strategy",
                "canary",
                "--steps",
                "50,25,100",
            ],
            ["--steps: steps must increase"],
        ),
        (
            [
                "deploy",
                "shop/cart",
                "1.0.0",
                "--building",
                "b",
                "--strategy",
                "canary",
                "--monitor",
                "30",
            ],
            ["--monitor: '30' is not a duration (a unit is required)"],
        ),
        (["rollout", "history", "shop/cart", "--limit", "0"], ["--limit: must be at least 1"]),
        (["rollback", "shop/cart", "--to", "previous"], ["--to: 'previous'"]),
        (["events", "--since", "soon"], ["--since: 'soon' is not a duration"]),
        (["gc", "run", "--kind", "disk"], ["--kind: 'disk'"]),
        (["--coordinator", "host:port", "hosts", "list"], ["--coordinator: 'host:port'"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragments: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert_one_line_error(result.stderr, *fragments)


def test_unreadable_changes_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = runner.invoke(
        app, ["units", "publish", "shop/cart", "1.0.0", "--image", "i", "--changes", str(missing)]
    )
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "--changes: cannot read", "nope.toml")


def test_no_coordinator_answering_is_one_line_and_exit_1() -> None:
    first, second = closed_port(), closed_port()
    addresses = f"127.0.0.1:{first},127.0.0.1:{second}"
    result = runner.invoke(app, ["--coordinator", addresses, "units", "list"])
    assert result.exit_code == 1, result.output
    assert_one_line_error(
        result.stderr,
        "list units: UNAVAILABLE: no coordinator answered at",
        f"127.0.0.1:{first}, 127.0.0.1:{second}",
    )


def test_coordinator_address_from_the_environment() -> None:
    port = closed_port()
    result = runner.invoke(
        app,
        ["units", "show", "shop/cart", "-o", "json"],
        env={"LANDLORD_COORDINATOR": f"127.0.0.1:{port}"},
    )
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "show shop/cart: UNAVAILABLE", f"127.0.0.1:{port}")


def test_streaming_commands_fail_over_then_report_one_line() -> None:
    port = closed_port()
    result = runner.invoke(app, ["-c", f"127.0.0.1:{port}", "events", "--follow"])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "stream events: UNAVAILABLE")


def test_shell_completion_script() -> None:
    result = runner.invoke(app, ["--show-completion", "bash"], env={"SHELL": "/bin/bash"})
    assert result.exit_code == 0, result.output
    assert "_LANDLORD_COMPLETE" in result.stdout


def test_version_option() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("landlord ")
