"""`landlord hosts|instances|gc|leader`: the fleet the coordinators manage."""

from __future__ import annotations

from typing import Annotated

import typer

from common.errors import InvalidArgument
from common.gc_kinds import GcKind, parse_gc_kinds
from common.gen.landlord.v1 import admin_pb2
from common.proto_values import gc_kinds_to_pb
from coordinator.cli.arguments import parse_unit_ref
from coordinator.cli.context import OutputOption, emit, unary
from coordinator.cli.tables import (
    cordon_view,
    gc_view,
    hosts_table,
    instances_table,
    leader_view,
)

hosts_app = typer.Typer(help="Hosts that run agents.", no_args_is_help=True)
instances_app = typer.Typer(help="Running instances of units.", no_args_is_help=True)
gc_app = typer.Typer(help="Garbage collection.", no_args_is_help=True)

def build_list_instances_request(
    host: str | None, unit: str | None, apartment: str | None
) -> admin_pb2.ListInstancesRequest:
    """Filters of `instances list`: --unit APARTMENT/UNIT or --apartment, and --host."""
    request = admin_pb2.ListInstancesRequest(host_id=host or "")
    if unit is not None:
        ref = parse_unit_ref(unit, "--unit")
        if apartment is not None and apartment != ref.apartment:
            raise InvalidArgument(
                f"--apartment {apartment!r} contradicts --unit {unit!r}", field="--apartment"
            )
        request.apartment, request.unit = ref.apartment, ref.unit
    elif apartment is not None:
        request.apartment = apartment
    return request


def build_gc_request(host: str | None, kinds: list[str]) -> admin_pb2.RunGarbageCollectionRequest:
    wanted = parse_gc_kinds(kinds, "--kind")
    return admin_pb2.RunGarbageCollectionRequest(host_id=host or "",
                                                 gc_kinds=gc_kinds_to_pb(wanted))


@hosts_app.command("list")
def list_hosts(
    ctx: typer.Context,
    building: Annotated[str | None, typer.Option(help="Only this building.")] = None,
    output: OutputOption = None,
) -> None:
    """List hosts: building, status, capacity, what is allocated and any cordon."""
    request = admin_pb2.ListHostsRequest(building=building or "")
    emit(ctx, output, unary(ctx, "ListHosts", request, "list hosts"), hosts_table)


@hosts_app.command("cordon")
def cordon_host(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="The host id (as `hosts list` shows it).")],
    reason: Annotated[str, typer.Option(help="Why (shown by `hosts list`).")] = "",
    output: OutputOption = None,
) -> None:
    """Place no new instances on HOST; what runs there keeps running."""
    request = admin_pb2.CordonHostRequest(host_id=host, reason=reason)
    emit(ctx, output, unary(ctx, "CordonHost", request, f"cordon host {host}"), cordon_view)


@hosts_app.command("uncordon")
def uncordon_host(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="The host id (as `hosts list` shows it).")],
    output: OutputOption = None,
) -> None:
    """Make a cordoned HOST placeable again."""
    request = admin_pb2.UncordonHostRequest(host_id=host)
    emit(ctx, output, unary(ctx, "UncordonHost", request, f"uncordon host {host}"),
         cordon_view)


@instances_app.command("list")
def list_instances(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Only on this host.")] = None,
    unit: Annotated[
        str | None, typer.Option(help="Only this unit (APARTMENT/UNIT).", show_default=False)
    ] = None,
    apartment: Annotated[str | None, typer.Option(help="Only this apartment.")] = None,
    output: OutputOption = None,
) -> None:
    """List instances with their state, health and usage."""
    request = build_list_instances_request(host, unit, apartment)
    response = unary(ctx, "ListInstances", request, "list instances")
    emit(ctx, output, response, lambda r: instances_table(r.instances))


@gc_app.command("run")
def run_gc(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Only this host (default: all).")] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(help=f"{' | '.join(GcKind)} (repeat; default: all).", show_default=False),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Run garbage collection now instead of waiting for its period."""
    request = build_gc_request(host, list(kind or ()))
    emit(ctx, output, unary(ctx, "RunGarbageCollection", request, "run gc"), gc_view)


def leader(ctx: typer.Context, output: OutputOption = None) -> None:
    """Show which coordinator leads."""
    request = admin_pb2.GetLeaderRequest()
    emit(ctx, output, unary(ctx, "GetLeader", request, "get leader"), leader_view)
