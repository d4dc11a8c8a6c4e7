"""`landlord rollout ...` and `landlord rollback`: follow and steer a unit's rollout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import typer
from rich.live import Live
from rich.text import Text

from common.gen.landlord.v1 import admin_pb2, types_pb2
from coordinator.cli.client import AdminClient, CallFailed
from coordinator.cli.context import (
    CliSettings,
    OutputOption,
    UnitArg,
    chosen_output,
    emit,
    output_of,
    settings_of,
    unary,
)
from coordinator.cli.exit_codes import exit_code_for_phase, is_terminal
from coordinator.cli.output import OutputFormat, console, print_json_line, print_rich
from coordinator.cli.rollout_requests import (
    CONTROLS,
    build_control_request,
    build_get_rollout_request,
    build_list_rollouts_request,
    build_rollback_request,
)
from coordinator.cli.rollout_view import history_table, rollout_summary, rollout_view

app = typer.Typer(help="Follow and steer rollouts.", no_args_is_help=True)

RECONNECTS = 5
"""How many times a watch reopens its stream after the coordinator went away."""

Show = Callable[[types_pb2.RolloutInfo, list[types_pb2.InstanceStatus]], None]


async def watch_rollout(
    settings: CliSettings,
    request: admin_pb2.GetRolloutRequest,
    show: Show,
    with_instances: bool,
) -> types_pb2.RolloutInfo | None:
    """Show every update of a rollout until it ends; survives a coordinator failover."""
    what = f"watch rollout of {request.apartment}/{request.unit}"
    unit_filter = admin_pb2.ListInstancesRequest(apartment=request.apartment, unit=request.unit)
    last: types_pb2.RolloutInfo | None = None
    async with AdminClient(settings.client) as client:
        for attempt in range(RECONNECTS + 1):
            if attempt:
                await asyncio.sleep(min(2.0, 0.25 * attempt))
            try:
                async for info in client.stream("WatchRollout", request, what):
                    instances: list[types_pb2.InstanceStatus] = []
                    if with_instances:
                        listing = await client.unary(
                            "ListInstances", unit_filter, f"list instances of {request.unit}"
                        )
                        instances = list(listing.instances)
                    last = info
                    show(info, instances)
                    if is_terminal(info.phase):
                        return last
            except CallFailed as err:
                # reconnect only to a stream that worked once (a failover), never to none
                if err.code != "UNAVAILABLE" or attempt == RECONNECTS or last is None:
                    raise
    return last


def watch_format(chosen: OutputFormat | None, terminal: bool) -> OutputFormat:
    """How `rollout status --watch` prints: as asked; else redrawn in place on a terminal
    and JSON lines (one document per update) into a pipe or file."""
    if chosen is not None:
        return chosen
    return OutputFormat.TABLE if terminal else OutputFormat.JSON


def follow_until_done(
    ctx: typer.Context, request: admin_pb2.GetRolloutRequest, output: OutputFormat | None
) -> None:
    """Watch a rollout to its end; exit 0 when promoted, 3 when it failed or rolled back."""
    settings = settings_of(ctx)
    fmt = output_of(ctx, output)
    out = console()
    if fmt is OutputFormat.JSON:
        last = asyncio.run(
            watch_rollout(settings, request, lambda info, _: print_json_line(info), False)
        )
    elif out.is_terminal:
        with Live(console=out, auto_refresh=False) as live:

            def refresh(info: types_pb2.RolloutInfo, hosts: list[types_pb2.InstanceStatus]) -> None:
                live.update(rollout_view(info, hosts), refresh=True)

            last = asyncio.run(watch_rollout(settings, request, refresh, True))
    else:
        latest: list[types_pb2.InstanceStatus] = []
        printed = [""]

        def line(info: types_pb2.RolloutInfo, hosts: list[types_pb2.InstanceStatus]) -> None:
            latest[:] = hosts
            summary = rollout_summary(info)
            if summary != printed[0]:  # live figures refresh often; print what changed
                printed[0] = summary
                out.print(Text(summary), soft_wrap=True)

        last = asyncio.run(watch_rollout(settings, request, line, True))
        if last is not None:
            print_rich(rollout_view(last, latest))
    if last is None or not is_terminal(last.phase):
        raise CallFailed(
            f"watch rollout of {request.apartment}/{request.unit}",
            "UNAVAILABLE",
            "the stream ended before the rollout finished",
        )
    raise typer.Exit(exit_code_for_phase(last.phase))


@app.command()
def status(
    ctx: typer.Context,
    unit: UnitArg,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow live until it ends.")] = (
        False
    ),
    rollout_id: Annotated[
        str | None, typer.Option("--id", help="A past rollout (default: latest).")
    ] = None,
    output: OutputOption = None,
) -> None:
    """Show a unit's rollout: step, traffic split (merged and per host), criteria and
    instances per host. --watch redraws it live on a terminal; piped, it prints one JSON
    document per update (JSON lines) unless --output says otherwise."""
    request = build_get_rollout_request(unit, rollout_id)
    if watch:
        fmt = watch_format(chosen_output(ctx, output), console().is_terminal)
        follow_until_done(ctx, request, fmt)
        return
    info = unary(ctx, "GetRollout", request, f"rollout status of {unit}")
    if output_of(ctx, output) is OutputFormat.JSON:
        emit(ctx, output, info, lambda _: rollout_view(info))
        return
    listing = unary(
        ctx,
        "ListInstances",
        admin_pb2.ListInstancesRequest(apartment=request.apartment, unit=request.unit),
        f"list instances of {unit}",
    )
    print_rich(rollout_view(info, list(listing.instances)))


def _control(ctx: typer.Context, unit: str, action: str, output: OutputFormat | None) -> None:
    request = build_control_request(unit, action)
    info = unary(ctx, "ControlRollout", request, f"{action} rollout of {unit}")
    emit(ctx, output, info, rollout_summary)


def _register_control(action: str, help_text: str) -> None:
    def command(ctx: typer.Context, unit: UnitArg, output: OutputOption = None) -> None:
        _control(ctx, unit, action, output)

    command.__doc__ = help_text
    app.command(action)(command)


for _action, _help in (
    ("promote", "Promote now: skip the remaining steps (or approve a manual promotion)."),
    ("abort", "Abort: traffic back to the stable version, new instances removed."),
    ("pause", "Pause at the current step."),
    ("resume", "Resume a paused rollout."),
    ("retry", "Retry a failed or aborted rollout from its first step."),
):
    assert _action in CONTROLS
    _register_control(_action, _help)


@app.command()
def history(
    ctx: typer.Context,
    unit: UnitArg,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    output: OutputOption = None,
) -> None:
    """List a unit's past rollouts."""
    request = build_list_rollouts_request(unit, limit)
    emit(
        ctx,
        output,
        unary(ctx, "ListRollouts", request, f"rollout history of {unit}"),
        history_table,
    )


def rollback(
    ctx: typer.Context,
    unit: UnitArg,
    to: Annotated[
        str | None, typer.Option("--to", help="Version (default: the previous stable).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the rollback until it ends.")] = False,
    output: OutputOption = None,
) -> None:
    """Move a unit back to its previous stable version (or --to VERSION)."""
    request = build_rollback_request(unit, to)
    info = unary(ctx, "Rollback", request, f"rollback {unit}")
    if wait:
        follow_until_done(ctx, build_get_rollout_request(unit, info.rollout_id), output)
        return
    emit(ctx, output, info, rollout_summary)
