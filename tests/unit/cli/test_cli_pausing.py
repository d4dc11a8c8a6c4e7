"""`landlord units|instances pause|resume` in-process: help pages, and the lines people read."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from common.gen.landlord.v1 import admin_pb2, types_pb2
from coordinator.cli.main import app
from coordinator.cli.pausing import pause_view

runner = CliRunner()


@pytest.mark.parametrize("group", ["units", "instances"])
@pytest.mark.parametrize("command", ["pause", "resume"])
def test_help_pages(group: str, command: str) -> None:
    result = runner.invoke(app, [group, command, "--help"])
    assert result.exit_code == 0, result.output
    assert ("APARTMENT/UNIT" if group == "units" else "INSTANCE") in result.stdout


def _text(pause: bool, response: admin_pb2.PauseUnitResponse) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(pause_view(pause)(response))
    return buffer.getvalue().strip()


def test_the_lines_people_read() -> None:
    unit = types_pb2.UnitInfo(apartment="shop", unit="api", instances=2)
    paused = admin_pb2.PauseUnitResponse(unit=unit, changed=True, instances=["a"], paused=["a"])
    assert _text(True, paused) == ("shop/api: paused a (out of every route, frozen with their "
                                   "memory); 1 of 2 instance(s) paused")
    resumed = admin_pb2.PauseUnitResponse(unit=unit, changed=True, instances=["a"])
    assert _text(False, resumed) == ("shop/api: resumed a (they serve again once healthy); "
                                     "0 of 2 instance(s) paused")
    same = admin_pb2.PauseUnitResponse(unit=unit, paused=["a", "b"])
    assert _text(True, same) == "shop/api: nothing changed (2 of 2 instance(s) paused)"
