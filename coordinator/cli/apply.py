"""`landlord apply -f FILE`: publish and deploy what a unit file declares, showing the plan
first; `--dry-run` shows the plan and changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.unit_spec import UnitSpec
from coordinator.api.convert_admin import publish_from_pb
from coordinator.cli.apply_file import UnitFile, load_unit_file
from coordinator.cli.apply_plan import ApplyPlan, Published, UnitNow, plan_apply
from coordinator.cli.client import AdminClient, CallFailed
from coordinator.cli.context import OutputOption, output_of, settings_of
from coordinator.cli.output import OutputFormat, to_json_dict
from coordinator.cli.publish import build_publish_request
from coordinator.cli.rollout import follow_until_done
from coordinator.cli.rollout_requests import build_deploy_request, build_get_rollout_request

STOPPED = frozenset({types_pb2.INSTANCE_STATE_STOPPED, types_pb2.INSTANCE_STATE_STOPPING})


def _spec(spec: types_pb2.UnitSpec, version: str) -> UnitSpec:
    return publish_from_pb(admin_pb2.PublishVersionRequest(spec=spec, version=version))[0]


async def _current(client: AdminClient, apartment: str, unit: str
                   ) -> tuple[dict[str, Published], str, UnitNow | None]:
    """The unit's published versions, its latest, and its deploy state (None: never
    deployed); an unknown unit has none of them."""
    try:
        listed = await client.unary("ListVersions", admin_pb2.ListVersionsRequest(
            apartment=apartment, unit=unit), f"versions of {apartment}/{unit}")
        shown = await client.unary("GetUnit", admin_pb2.GetUnitRequest(
            apartment=apartment, unit=unit), f"show {apartment}/{unit}")
    except CallFailed as err:
        if err.code == "NOT_FOUND":
            return {}, "", None
        raise
    published = {v.version: Published(_spec(v.spec, v.version), v.image_digest)
                 for v in listed.versions}
    running: dict[str, int] = {}
    for instance in shown.instances:
        if instance.state not in STOPPED:
            running[instance.version] = running.get(instance.version, 0) + 1
    info = shown.unit
    now = UnitNow(info.state, info.stable_version, running) if info.stable_version or \
        running else None
    return published, info.latest_version, now


async def _apply(ctx: typer.Context, declared: UnitFile, dry_run: bool
                 ) -> tuple[ApplyPlan, Any, Any]:
    publish = build_publish_request(declared.publish)
    deploy = build_deploy_request(declared.deploy)
    desired = _spec(publish.spec, publish.version)
    async with AdminClient(settings_of(ctx).client) as client:
        published, latest, now = await _current(client, desired.apartment, desired.unit)
        plan = plan_apply(desired, deploy.replicas, declared.deploy.strategy, published,
                          latest, now)
        if dry_run:
            return plan, None, None
        done = deployed = None
        if plan.publish:
            done = await client.unary("PublishVersion", publish,
                                      f"publish {desired.name} {desired.version}")
        if plan.deploy:
            deployed = await client.unary("Deploy", deploy,
                                          f"deploy {desired.name} {desired.version}")
        return plan, done, deployed


def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("--file", "-f", help="Unit file (TOML).",
                                       show_default=False)],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would change; change nothing.")] = False,
    wait: Annotated[bool, typer.Option(
        help="Follow the rollout to its end; exit 3 if it fails or rolls back.")] = False,
    output: OutputOption = None,
) -> None:
    """Publish and deploy what FILE declares (one version of one unit, how it runs and how
    it is deployed), showing the plan first."""
    declared = load_unit_file(file)
    plan, published, deployed = asyncio.run(_apply(ctx, declared, dry_run))
    as_json = output_of(ctx, output) is OutputFormat.JSON
    if as_json:
        typer.echo(json.dumps({
            "plan": list(plan.lines), "publish": plan.publish, "deploy": plan.deploy,
            "dry_run": dry_run,
            "version": to_json_dict(published.version) if published is not None else None,
            "rollout": to_json_dict(deployed.rollout) if deployed is not None else None,
        }, indent=2))
    else:
        typer.echo("\n".join(plan.lines))
        if dry_run:
            typer.echo("dry run: nothing was changed")
        elif not plan.changes_anything:
            typer.echo("nothing to change")
        if deployed is not None:
            typer.echo(f"rollout {deployed.rollout.rollout_id} started")
    if wait and deployed is not None:
        follow_until_done(ctx, build_get_rollout_request(declared.deploy.unit,
                                                         deployed.rollout.rollout_id), output)
