"""`landlord deploy`: start a blue-green or canary rollout of a published version."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from coordinator.cli.context import OutputOption, emit, unary
from coordinator.cli.rollout import follow_until_done
from coordinator.cli.rollout_requests import (
    STRATEGIES,
    SWITCH_MODES,
    DeployArgs,
    build_deploy_request,
    build_get_rollout_request,
)
from coordinator.cli.rollout_view import rollout_summary

CANARY = "Canary steps (--strategy canary, or --switch canary)"
CRITERIA = "Success criteria"
BLUE_GREEN = "Blue-green (--strategy blue-green)"


def _opt(help_text: str, panel: str | None = None) -> Any:
    return typer.Option(help=help_text, show_default=False, rich_help_panel=panel)


def deploy(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(metavar="APARTMENT/UNIT", show_default=False)],
    version: Annotated[str, typer.Argument(metavar="VERSION", show_default=False)],
    building: Annotated[
        str, _opt("Building (host pool); default: the unit's, or the only one.")
    ] = "",
    replicas: Annotated[int | None, _opt(
        "Instances of the new version; default: as many as the unit runs now (1 for a first "
        "deploy).")] = None,
    strategy: Annotated[str, typer.Option(help=" | ".join(STRATEGIES))] = "blue-green",
    steps: Annotated[str | None, _opt("Traffic percentages, e.g. 5,25,50,100.", CANARY)] = None,
    monitor: Annotated[str | None, _opt("Observation time per step, e.g. 30s.", CANARY)] = None,
    step_delay: Annotated[str | None, _opt("Pause between steps, e.g. 10s.", CANARY)] = None,
    inconclusive_deadline: Annotated[
        str | None, _opt("How long a step may lack enough requests.", CANARY)
    ] = None,
    max_error_rate: Annotated[str | None, _opt("e.g. 0.01 or 1%.", CRITERIA)] = None,
    max_p95: Annotated[str | None, _opt("Latency p95 limit, e.g. 250ms.", CRITERIA)] = None,
    min_rps: Annotated[float | None, _opt("Minimum throughput (requests/s).", CRITERIA)] = None,
    min_requests: Annotated[
        int | None, _opt("Minimum requests before a step is judged.", CRITERIA)
    ] = None,
    switch: Annotated[str | None, _opt(" | ".join(SWITCH_MODES), BLUE_GREEN)] = None,
    warmup: Annotated[str | None, _opt("Warm-up before validation.", BLUE_GREEN)] = None,
    cleanup_delay: Annotated[str | None, _opt("Keep blue this long.", BLUE_GREEN)] = None,
    gradual_steps: Annotated[int | None, _opt("Steps of --switch gradual.", BLUE_GREEN)] = None,
    gradual_step_delay: Annotated[
        str | None, _opt("Pause between gradual steps, e.g. 10s.", BLUE_GREEN)
    ] = None,
    performance_requests: Annotated[
        int | None, _opt("Requests of the performance check.", BLUE_GREEN)
    ] = None,
    check_http: Annotated[
        list[str] | None, _opt("Integration check: GET PATH answers 200 (repeat).", BLUE_GREEN)
    ] = None,
    check_command: Annotated[
        list[str] | None, _opt("Integration check: command exits 0 (repeat).", BLUE_GREEN)
    ] = None,
    manual_promotion: Annotated[
        bool, typer.Option(help="Wait for `rollout promote`.", rich_help_panel=BLUE_GREEN)
    ] = False,
    sticky: Annotated[
        bool | None,
        typer.Option("--sticky/--no-sticky", show_default=False, help=(
            "Sticky canary (like Flagger's session affinity): a client that first landed "
            "on a version (a cookie) stays on it through every traffic step, until "
            "promotion or rollback, when it follows the weights again. The choice is "
            "kept on the unit as the default of its later deploys; without either flag "
            "a deploy uses that default (off until set).")),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Follow until the end; exit 3 if it fails or rolls back.")
    ] = False,
    output: OutputOption = None,
) -> None:
    """Deploy VERSION of a unit to a building with a blue-green or canary rollout."""
    args = DeployArgs(
        unit=unit,
        version=version,
        building=building,
        replicas=replicas,
        strategy=strategy,
        steps=steps,
        monitor=monitor,
        step_delay=step_delay,
        inconclusive_deadline=inconclusive_deadline,
        max_error_rate=max_error_rate,
        max_p95=max_p95,
        min_rps=min_rps,
        min_requests=min_requests,
        switch=switch,
        warmup=warmup,
        cleanup_delay=cleanup_delay,
        gradual_steps=gradual_steps,
        gradual_step_delay=gradual_step_delay,
        performance_requests=performance_requests,
        check_http=tuple(check_http or ()),
        check_command=tuple(check_command or ()),
        manual_promotion=manual_promotion,
        sticky=sticky,
    )
    request = build_deploy_request(args)
    response = unary(ctx, "Deploy", request, f"deploy {unit} {version}")
    if wait:
        follow_until_done(ctx, build_get_rollout_request(unit, response.rollout.rollout_id), output)
        return
    emit(
        ctx,
        output,
        response,
        lambda r: f"rollout {r.rollout.rollout_id} started: " + rollout_summary(r.rollout),
    )
