"""How `landlord units stop/delete/scale` read for people, and the unit checked at the edge."""

from __future__ import annotations

import io

import pytest
from rich.console import Console, RenderableType

from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2, types_pb2
from coordinator.api.unit_changes_proto import unit_of
from coordinator.cli.units import change_view


def render(renderable: RenderableType) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(renderable)
    return buffer.getvalue()


def reply(changed: bool = True, instances: int = 3, started: tuple[str, ...] = (),
          stopped: tuple[str, ...] = (), state: str = "running") -> admin_pb2.UnitChangeResponse:
    unit = types_pb2.UnitInfo(apartment="shop", unit="api", state=state,
                              stable_version="" if state == "stopped" else "1.0.0",
                              instances=instances)
    return admin_pb2.UnitChangeResponse(unit=unit, changed=changed, started=list(started),
                                        stopped=list(stopped))


def test_views() -> None:
    up = render(change_view("scale")(reply(started=("a", "b"))))
    assert "shop/api 1.0.0 scaled to 3 instance(s)" in up
    assert "started a, b (they join the routes once healthy)" in up
    down = render(change_view("scale")(reply(instances=1, stopped=("c",))))
    assert "drained and stopped c" in down
    assert "already at 3 instance(s); nothing changed" in render(
        change_view("scale")(reply(changed=False)))
    stop = render(change_view("stop")(reply(instances=0, stopped=("a",), state="stopped")))
    assert "shop/api stopped: 1 instance(s) drained and stopped" in stop
    assert "already stopped; nothing changed" in render(
        change_view("stop")(reply(changed=False, instances=0, state="stopped")))
    assert "shop/api deleted" in render(change_view("delete")(reply(state="stopped")))


def test_the_unit_is_checked_at_the_edge() -> None:
    assert unit_of(admin_pb2.StopUnitRequest(apartment="shop", unit="api")) == ("shop", "api")
    for apartment, unit, words in (("", "api", "apartment and unit are required"),
                                   ("shop", "", "apartment and unit are required"),
                                   ("shop", "API", "is not valid"),
                                   ("shop", "blog/api", "without '/'")):
        with pytest.raises(InvalidArgument, match=words):
            unit_of(admin_pb2.StopUnitRequest(apartment=apartment, unit=unit))
