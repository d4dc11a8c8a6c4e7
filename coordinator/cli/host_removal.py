"""`landlord hosts drain|drain-status|decommission`: taking a host out of service.

``drain`` starts (or rejoins) the drain, prints where each instance would go, then follows
the drain record the leader keeps in etcd, one line per change, until it ends; a leader
change on the way is ridden out (any coordinator answers the status from its cache). It
exits 0 when the host is drained, 1 when the drain stopped or is blocked (what is left is
named). ``--no-wait`` returns after the start. Commands are registered on ``hosts``
(coordinator/cli/fleet.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.text import Text

from common.gen.landlord.v1 import admin_pb2
from coordinator.cli.client import AdminClient, CallFailed
from coordinator.cli.context import OutputOption, emit, output_of, settings_of, unary
from coordinator.cli.durations import duration_to_proto, parse_duration
from coordinator.cli.exit_codes import ExitCode
from coordinator.cli.fleet import hosts_app
from coordinator.cli.output import OutputFormat, print_json_line, print_rich

__all__ = ["decommission_host", "drain_host", "drain_lines", "drain_status"]

HostArgument = Annotated[str, typer.Argument(help="The host id (as `hosts list` shows it).")]
RIDE_OUT = 60.0
"""Seconds the follow keeps asking while no coordinator answers (a leader change)."""


def drain_lines(status: admin_pb2.DrainStatus) -> list[str]:
    """The drain as a few lines for people."""
    lines = [f"host {status.host_id}: {status.state}, {status.moved_count} moved"
             + (f"; moving {status.moving}" if status.moving else "")
             + (f" - {status.message}" if status.message else "")]
    if status.state != "draining" and status.left:
        lines += [f"  left: {i.unit} {i.instance_id} ({i.why or 'not moved yet'})"
                  for i in status.left]
    return lines


def plan_lines(response: admin_pb2.DrainHostResponse) -> list[str]:
    if not response.started:
        return [f"a drain of {response.status.host_id} is already running; following it"]
    lines = [f"draining {response.status.host_id} (cordoned): {len(response.plan)} "
             "instance(s) to move"]
    for move in response.plan:
        target = f"-> {move.to_host}" if move.to_host else f"cannot be placed: {move.why}"
        lines.append(f"  {move.unit} {move.instance_id} {target}")
    return lines


@hosts_app.command("drain")
def drain_host(
    ctx: typer.Context,
    host: HostArgument,
    deadline: Annotated[str | None, typer.Option(
        help="Stop the drain (never force it) after this long, e.g. 10m.")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Follow the drain until it ends.")] = True,
    output: OutputOption = None,
) -> None:
    """Cordon HOST, then move its instances elsewhere one at a time with no failed
    requests (each replacement healthy and routed before the old one drains)."""
    request = admin_pb2.DrainHostRequest(host_id=host)
    if deadline is not None:
        request.deadline.CopyFrom(duration_to_proto(parse_duration(deadline, "--deadline")))
    response = unary(ctx, "DrainHost", request, f"drain host {host}")
    as_json = output_of(ctx, output) is OutputFormat.JSON
    if as_json:
        print_json_line(response)
    else:
        print_rich(Text("\n".join(plan_lines(response))))
    final = asyncio.run(_follow(ctx, host, as_json)) if wait else response.status
    if final.state not in ("drained", "draining"):
        raise typer.Exit(ExitCode.ERROR)


async def _follow(ctx: typer.Context, host: str, as_json: bool) -> admin_pb2.DrainStatus:
    request = admin_pb2.GetDrainStatusRequest(host_id=host)
    shown: list[str] = []
    unanswered_since = 0.0
    async with AdminClient(settings_of(ctx).client) as client:
        while True:
            try:
                status: admin_pb2.DrainStatus = await client.unary(
                    "GetDrainStatus", request, f"drain status {host}")
                unanswered_since = 0.0
            except CallFailed as err:
                if err.code != "UNAVAILABLE":
                    raise
                unanswered_since = unanswered_since or time.monotonic()
                if time.monotonic() - unanswered_since > RIDE_OUT:
                    raise
                await asyncio.sleep(1.0)
                continue
            lines = drain_lines(status)
            if lines != shown:
                shown = lines
                if as_json:
                    print_json_line(status)
                else:
                    print_rich(Text("\n".join(lines)))
            if status.state != "draining":
                return status
            await asyncio.sleep(1.0)


@hosts_app.command("drain-status")
def drain_status(ctx: typer.Context, host: HostArgument, output: OutputOption = None) -> None:
    """Show HOST's drain: state, the move under way, what was moved and what is left."""
    request = admin_pb2.GetDrainStatusRequest(host_id=host)
    emit(ctx, output, unary(ctx, "GetDrainStatus", request, f"drain status {host}"),
         lambda status: Text("\n".join(drain_lines(status))))


@hosts_app.command("decommission")
def decommission_host(ctx: typer.Context, host: HostArgument,
                      output: OutputOption = None) -> None:
    """Remove a drained HOST from the cluster with its records; its agent may not register
    again under that id."""
    request = admin_pb2.DecommissionHostRequest(host_id=host)
    emit(ctx, output, unary(ctx, "DecommissionHost", request, f"decommission host {host}"),
         lambda done: Text(f"host {done.host_id} decommissioned: removed from building "
                           f"{done.building or '(default)'} with its records"))
