"""`landlord units pause|resume APARTMENT/UNIT` and `landlord instances pause|resume ID`.

Pause takes instances out of every host's route and freezes them (memory and state kept,
capacity still reserved); resume thaws them without a restart. Pausing what is paused, or
resuming what is not, changes nothing and says so (exit 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.text import Text

from common.errors import NotFound
from common.gen.landlord.v1 import admin_pb2
from coordinator.cli.arguments import parse_unit_ref
from coordinator.cli.context import OutputOption, UnitArg, emit, unary

__all__ = ["register_instances", "register_units"]

InstanceArg = Annotated[list[str], typer.Argument(metavar="INSTANCE...", show_default=False,
                                                  help="Instance ids (one unit's).")]


def _call(ctx: typer.Context, pause: bool, request: admin_pb2.PauseUnitRequest,
          output: OutputOption) -> None:
    method, verb = ("PauseUnit", "pause") if pause else ("ResumeUnit", "resume")
    name = f"{request.apartment}/{request.unit}"
    emit(ctx, output, unary(ctx, method, request, f"{verb} {name}"), pause_view(pause))


def pause_unit(ctx: typer.Context, unit: UnitArg, output: OutputOption = None) -> None:
    """Drain every instance of a unit from all routes and freeze it (memory and state
    kept); its entry point answers 503 with Retry-After until it is resumed."""
    ref = parse_unit_ref(unit)
    _call(ctx, True, admin_pb2.PauseUnitRequest(apartment=ref.apartment, unit=ref.unit), output)


def resume_unit(ctx: typer.Context, unit: UnitArg, output: OutputOption = None) -> None:
    """Thaw a paused unit's instances (same processes); each serves again once healthy."""
    ref = parse_unit_ref(unit)
    _call(ctx, False, admin_pb2.PauseUnitRequest(apartment=ref.apartment, unit=ref.unit),
          output)


def _instances_request(ctx: typer.Context, ids: list[str]) -> admin_pb2.PauseUnitRequest:
    """The request naming ``ids``, with the unit they belong to (looked up; one unit)."""
    listed = unary(ctx, "ListInstances", admin_pb2.ListInstancesRequest(), "list instances")
    units = {i.instance_id: (i.apartment, i.unit) for i in listed.instances}
    missing = sorted(set(ids) - set(units))
    if missing:
        raise NotFound(f"no instance {', '.join(missing)} (`landlord instances list` shows "
                       "them)", instance=missing[0])
    owners = {units[i] for i in ids}
    if len(owners) > 1:
        named = ", ".join(sorted(f"{a}/{u}" for a, u in owners))
        raise typer.BadParameter(f"the instances belong to several units ({named}); "
                                 "pause or resume one unit's at a time")
    apartment, unit = owners.pop()
    return admin_pb2.PauseUnitRequest(apartment=apartment, unit=unit, instance_ids=ids)


def pause_instances(ctx: typer.Context, instance_ids: InstanceArg,
                    output: OutputOption = None) -> None:
    """Drain these instances from all routes and freeze them; the unit's other instances
    keep serving."""
    _call(ctx, True, _instances_request(ctx, instance_ids), output)


def resume_instances(ctx: typer.Context, instance_ids: InstanceArg,
                     output: OutputOption = None) -> None:
    """Thaw paused instances (same processes); each serves again once healthy."""
    _call(ctx, False, _instances_request(ctx, instance_ids), output)


def pause_view(pause: bool) -> Callable[[admin_pb2.PauseUnitResponse], RenderableType]:
    """How a pause or resume reads for people."""

    def view(response: admin_pb2.PauseUnitResponse) -> RenderableType:
        name = f"{response.unit.apartment}/{response.unit.unit}"
        paused = f"{len(response.paused)} of {response.unit.instances} instance(s) paused"
        if not response.changed:
            return Text(f"{name}: nothing changed ({paused})")
        ids = ", ".join(response.instances)
        if pause:
            return Text(f"{name}: paused {ids} (out of every route, frozen with their "
                        f"memory); {paused}")
        return Text(f"{name}: resumed {ids} (they serve again once healthy); {paused}")

    return view


def register_units(app: typer.Typer) -> None:
    app.command("pause", no_args_is_help=True)(pause_unit)
    app.command("resume", no_args_is_help=True)(resume_unit)


def register_instances(app: typer.Typer) -> None:
    app.command("pause", no_args_is_help=True)(pause_instances)
    app.command("resume", no_args_is_help=True)(resume_instances)
