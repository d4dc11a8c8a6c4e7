"""`landlord units rebalance [APARTMENT/UNIT]`: move a unit's instances back to an even
spread over its building's placeable hosts, one at a time with no failed requests.

With no unit named, every unit (of ``--apartment`` when given) whose spread is uneven is
rebalanced. The command prints the planned moves, then (``--wait``, the default) follows
each rebalance record the leader keeps in etcd until it ends: exit 0 when every unit is
evenly spread, 1 when a rebalance stopped (a rollout or drain began, or a move failed; the
message says why). ``units rebalance-status`` shows a unit's last rebalance.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.text import Text

from common.gen.landlord.v1 import admin_pb2
from coordinator.cli.arguments import parse_unit_ref
from coordinator.cli.context import OutputOption, UnitArg, emit, output_of, unary
from coordinator.cli.exit_codes import ExitCode
from coordinator.cli.output import OutputFormat, print_json_line, print_rich
from coordinator.cli.status_follow import follow_status
from coordinator.cli.units import app as units_app

__all__ = ["rebalance_lines", "rebalance_status", "rebalance_units", "start_lines"]


def rebalance_lines(status: admin_pb2.RebalanceStatus) -> list[str]:
    """The rebalance as a line for people."""
    return [f"{status.apartment}/{status.unit}: {status.state}, {status.moved_count} moved"
            + (f"; moving {status.moving}" if status.moving else "")
            + (f" - {status.message}" if status.message else "")]


def start_lines(response: admin_pb2.RebalanceUnitsResponse) -> list[str]:
    if not response.rebalances:
        return ["nothing to rebalance: every unit is evenly spread"]
    lines = []
    for started in response.rebalances:
        s = started.status
        name = f"{s.apartment}/{s.unit}"
        if not started.started:
            lines.append(f"a rebalance of {name} is already running; following it")
        elif s.state == "done":
            lines.append(f"{name}: {s.message}")
        else:
            lines.append(f"rebalancing {name}: {len(started.plan)} move(s)")
            lines += [f"  {m.instance_id} {m.from_host} -> {m.to_host}" for m in started.plan]
    return lines


@units_app.command("rebalance")
def rebalance_units(
    ctx: typer.Context,
    unit: Annotated[str | None, typer.Argument(
        metavar="[APARTMENT/UNIT]", help="The unit (none: every unevenly spread unit).",
        show_default=False)] = None,
    apartment: Annotated[str, typer.Option(
        help="With no unit named: only this apartment's units.")] = "",
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Follow the rebalances until they end.")] = True,
    output: OutputOption = None,
) -> None:
    """Move instances back to an even spread over the building's placeable hosts, one at a
    time with no failed requests (each replacement healthy and routed before the old one
    drains)."""
    request = admin_pb2.RebalanceUnitsRequest(apartment=apartment)
    if unit is not None:
        ref = parse_unit_ref(unit)
        request = admin_pb2.RebalanceUnitsRequest(apartment=ref.apartment, unit=ref.unit)
    response = unary(ctx, "RebalanceUnits", request, f"rebalance {unit or 'units'}")
    as_json = output_of(ctx, output) is OutputFormat.JSON
    if as_json:
        print_json_line(response)
    else:
        print_rich(Text("\n".join(start_lines(response))))
    finals = [r.status for r in response.rebalances]
    if wait:
        finals = [asyncio.run(follow_status(
            ctx, "GetRebalanceStatus", admin_pb2.GetRebalanceStatusRequest(
                apartment=s.apartment, unit=s.unit),
            f"rebalance status {s.apartment}/{s.unit}", rebalance_lines,
            lambda st: st.state == "running", as_json)) for s in finals]
    if any(s.state == "stopped" for s in finals):
        raise typer.Exit(ExitCode.ERROR)


@units_app.command("rebalance-status")
def rebalance_status(ctx: typer.Context, unit: UnitArg, output: OutputOption = None) -> None:
    """Show the unit's last rebalance: state, the move under way, what was moved."""
    ref = parse_unit_ref(unit)
    request = admin_pb2.GetRebalanceStatusRequest(apartment=ref.apartment, unit=ref.unit)
    emit(ctx, output, unary(ctx, "GetRebalanceStatus", request, f"rebalance status {unit}"),
         lambda status: Text("\n".join(rebalance_lines(status))))
