"""`landlord hosts drain|drain-status|decommission` in-process: help, a bad --deadline as a
one-line usage error before any call, and the lines people read (plan and progress)."""

from __future__ import annotations

import pytest
from test_cli_app import assert_one_line_error
from typer.testing import CliRunner

from common.gen.landlord.v1 import admin_pb2
from coordinator.cli.host_removal import drain_lines, plan_lines
from coordinator.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["drain", "drain-status", "decommission"])
def test_help_pages(command: str) -> None:
    result = runner.invoke(app, ["hosts", command, "--help"])
    assert result.exit_code == 0, result.output
    assert "HOST" in result.stdout


@pytest.mark.parametrize("deadline", ["10", "soon", "-5m"])
def test_a_bad_deadline_is_one_line_and_exit_2(deadline: str) -> None:
    result = runner.invoke(app, ["hosts", "drain", "h1", "--deadline", deadline])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "--deadline")


def test_the_plan_names_each_target_and_what_fits_nowhere() -> None:
    response = admin_pb2.DrainHostResponse(
        status=admin_pb2.DrainStatus(host_id="h1", state="draining"), started=True,
        plan=[admin_pb2.PlannedMove(instance_id="w1", unit="shop/web", to_host="h2"),
              admin_pb2.PlannedMove(instance_id="d1", unit="shop/db",
                                    why="insufficient cpu (...)")])
    assert plan_lines(response) == [
        "draining h1 (cordoned): 2 instance(s) to move",
        "  shop/web w1 -> h2",
        "  shop/db d1 cannot be placed: insufficient cpu (...)",
    ]
    again = admin_pb2.DrainHostResponse(status=response.status, started=False)
    assert "already running" in plan_lines(again)[0]


def test_progress_lines_show_the_move_and_once_ended_what_is_left() -> None:
    status = admin_pb2.DrainStatus(host_id="h1", state="draining", moved_count=1,
                                   moving="shop/web w2 -> w9 on h2 (starting)")
    assert drain_lines(status) == ["host h1: draining, 1 moved; moving shop/web w2 -> w9 on h2 "
                                   "(starting)"]
    ended = admin_pb2.DrainStatus(
        host_id="h1", state="stopped", moved_count=1, message="deadline reached",
        left=[admin_pb2.InstanceLeft(instance_id="w3", unit="shop/web")])
    assert drain_lines(ended) == ["host h1: stopped, 1 moved - deadline reached",
                                  "  left: shop/web w3 (not moved yet)"]
