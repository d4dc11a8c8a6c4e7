"""`landlord units ...`: publish versions, look at units, versions and dependencies, and
stop, delete or scale a unit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.text import Text

from common.gen.landlord.v1 import admin_pb2
from coordinator.cli.arguments import parse_unit_ref, parse_unit_version
from coordinator.cli.context import OutputOption, UnitArg, emit, unary
from coordinator.cli.publish import (
    STATE_MODES,
    ChangeLists,
    PublishArgs,
    build_publish_request,
    load_change_file,
)
from coordinator.cli.tables import (
    publish_view,
    resolve_tree,
    unit_view,
    units_table,
    versions_table,
)

app = typer.Typer(help="Publish unit versions, inspect, stop, delete, scale and wake units.",
                  no_args_is_help=True)

@app.command()
def publish(
    ctx: typer.Context,
    unit: UnitArg,
    version: Annotated[str, typer.Argument(metavar="VERSION", help="Semantic version.")],
    image: Annotated[str, typer.Option(help="Image name or id.", show_default=False)],
    command: Annotated[
        str | None, typer.Option(help="Command line (shell words).", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port inside the host (0: assigned).", show_default=False)
    ] = None,
    service_port: Annotated[
        int | None, typer.Option(help="Entry port of the unit on every host.", show_default=False)
    ] = None,
    health_path: Annotated[
        str | None, typer.Option(help="HTTP health path, e.g. /healthz.", show_default=False)
    ] = None,
    health_command: Annotated[
        str | None,
        typer.Option(help="Health command run in the container instead of the HTTP probe "
                     "(shell words; exit 0 = healthy).", show_default=False),
    ] = None,
    health_interval: Annotated[str | None, typer.Option(show_default=False)] = None,
    health_timeout: Annotated[str | None, typer.Option(show_default=False)] = None,
    warmup: Annotated[
        str | None, typer.Option(help="Time before health failures count.", show_default=False)
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE (repeat).", show_default=False)
    ] = None,
    secret_env: Annotated[
        list[str] | None,
        typer.Option(help="Secret KEY=VALUE (repeat): given to instances, never shown.",
                     show_default=False),
    ] = None,
    secret_env_file: Annotated[
        Path | None,
        typer.Option(help="File of secret KEY=VALUE lines ('#' comments).", show_default=False),
    ] = None,
    cpu: Annotated[str | None, typer.Option(help="Cores: 0.5 or 500m.", show_default=False)] = None,
    memory: Annotated[
        str | None, typer.Option(help="Bytes: 256Mi, 1G.", show_default=False)
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="Bytes: 1Gi, 500M.", show_default=False)
    ] = None,
    network: Annotated[
        str | None, typer.Option(help="Bandwidth: 10Mbit.", show_default=False)
    ] = None,
    dep: Annotated[
        list[str] | None,
        typer.Option(help="Dependency NAME@RANGE, npm range (repeat).", show_default=False),
    ] = None,
    state_mode: Annotated[
        str | None, typer.Option(help=" | ".join(STATE_MODES), show_default=False)
    ] = None,
    idle_timeout: Annotated[
        str | None, typer.Option(help="Idle time before GC may remove.", show_default=False)
    ] = None,
    network_mode: Annotated[
        str | None,
        typer.Option(help="bridge (own network namespace) | host (the host's network).",
                     show_default=False),
    ] = None,
    run_as_root: Annotated[
        bool,
        typer.Option("--run-as-root", help="Run as root (default: the image's user, or uid "
                     "65532 when it names none or root)."),
    ] = False,
    metadata: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE (repeat).", show_default=False)
    ] = None,
    breaking: Annotated[
        list[str] | None, typer.Option(help="A breaking change (repeat).", show_default=False)
    ] = None,
    feature: Annotated[
        list[str] | None, typer.Option(help="A new feature (repeat).", show_default=False)
    ] = None,
    fix: Annotated[
        list[str] | None, typer.Option(help="A bug fix (repeat).", show_default=False)
    ] = None,
    internal: Annotated[
        list[str] | None, typer.Option(help="An internal change (repeat).", show_default=False)
    ] = None,
    changes: Annotated[
        Path | None,
        typer.Option(
            help="TOML or JSON file with lists breaking, features, fixes, internal.",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Publish VERSION of a unit (immutable; the change set decides the required bump).

    VERSION must be greater than every published version of its release line: its
    MAJOR.MINOR (a patch, e.g. a backport 1.2.1 after 2.0.0), else its MAJOR (a minor
    bump), else everything (a new major). The bump is judged against the highest
    release of that line.
    """
    flagged = ChangeLists(
        tuple(breaking or ()), tuple(feature or ()), tuple(fix or ()), tuple(internal or ())
    )
    from_file = load_change_file(changes) if changes is not None else ChangeLists()
    args = PublishArgs(
        unit=unit,
        version=version,
        image=image,
        command=command,
        port=port,
        service_port=service_port,
        health_path=health_path,
        health_command=health_command,
        health_interval=health_interval,
        health_timeout=health_timeout,
        warmup=warmup,
        env=tuple(env or ()),
        secret_env=tuple(secret_env or ()),
        secret_env_file=secret_env_file,
        cpu=cpu,
        memory=memory,
        storage=storage,
        network=network,
        dependencies=tuple(dep or ()),
        state_mode=state_mode,
        idle_timeout=idle_timeout,
        network_mode=network_mode,
        run_as_root=run_as_root,
        metadata=tuple(metadata or ()),
        changes=from_file + flagged,
    )
    request = build_publish_request(args)
    response = unary(ctx, "PublishVersion", request, f"publish {unit} {version}")
    emit(ctx, output, response, publish_view)


@app.command("list")
def list_units(
    ctx: typer.Context,
    apartment: Annotated[
        str | None, typer.Option(help="Only this apartment.", show_default=False)
    ] = None,
    output: OutputOption = None,
) -> None:
    """List units with their state and versions."""
    request = admin_pb2.ListUnitsRequest(apartment=apartment or "")
    emit(ctx, output, unary(ctx, "ListUnits", request, "list units"), units_table)


@app.command()
def show(ctx: typer.Context, unit: UnitArg, output: OutputOption = None) -> None:
    """Show a unit, its latest version and its instances."""
    ref = parse_unit_ref(unit)
    request = admin_pb2.GetUnitRequest(apartment=ref.apartment, unit=ref.unit)
    emit(ctx, output, unary(ctx, "GetUnit", request, f"show {ref}"), unit_view)


@app.command()
def versions(ctx: typer.Context, unit: UnitArg, output: OutputOption = None) -> None:
    """List the published versions of a unit."""
    ref = parse_unit_ref(unit)
    request = admin_pb2.ListVersionsRequest(apartment=ref.apartment, unit=ref.unit)
    emit(ctx, output, unary(ctx, "ListVersions", request, f"versions of {ref}"), versions_table)


@app.command()
def resolve(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(metavar="APARTMENT/UNIT@VERSION", show_default=False)],
    output: OutputOption = None,
) -> None:
    """Show the resolved dependency tree of a version."""
    ref, version = parse_unit_version(unit)
    request = admin_pb2.ResolveDependenciesRequest(
        apartment=ref.apartment, unit=ref.unit, version=version
    )
    root = f"{ref}@{version}"
    response = unary(ctx, "ResolveDependencies", request, f"resolve {root}")
    emit(ctx, output, response, lambda r: resolve_tree(root, r.resolved))


@app.command()
def stop(ctx: typer.Context, unit: UnitArg, output: OutputOption = None) -> None:
    """Drain and stop every instance of a unit; its versions and history stay."""
    ref = parse_unit_ref(unit)
    request = admin_pb2.StopUnitRequest(apartment=ref.apartment, unit=ref.unit)
    emit(ctx, output, unary(ctx, "StopUnit", request, f"stop {ref}"), change_view("stop"))


@app.command()
def delete(ctx: typer.Context, unit: UnitArg, output: OutputOption = None) -> None:
    """Remove a stopped unit entirely: its records, versions, rollouts and route."""
    ref = parse_unit_ref(unit)
    request = admin_pb2.DeleteUnitRequest(apartment=ref.apartment, unit=ref.unit)
    emit(ctx, output, unary(ctx, "DeleteUnit", request, f"delete {ref}"), change_view("delete"))


@app.command()
def scale(
    ctx: typer.Context,
    unit: UnitArg,
    replicas: Annotated[int, typer.Argument(metavar="N", help="Instances of the stable "
                                            "version to run (1..1000).", show_default=False)],
    output: OutputOption = None,
) -> None:
    """Run N instances of the unit's stable version, without a rollout."""
    ref = parse_unit_ref(unit)
    request = admin_pb2.ScaleUnitRequest(apartment=ref.apartment, unit=ref.unit,
                                         replicas=replicas)
    emit(ctx, output, unary(ctx, "ScaleUnit", request, f"scale {ref}"), change_view("scale"))


@app.command()
def wake(ctx: typer.Context, unit: UnitArg, output: OutputOption = None) -> None:
    """Start a collected (idle) unit's instances again, on their hosts, state restored."""
    ref = parse_unit_ref(unit)
    request = admin_pb2.WakeUnitRequest(apartment=ref.apartment, unit=ref.unit)
    emit(ctx, output, unary(ctx, "WakeUnit", request, f"wake {ref}"), change_view("wake"))


def change_view(verb: str) -> Callable[[admin_pb2.UnitChangeResponse], RenderableType]:
    """How a stop, delete or scale reads for people."""

    def view(response: admin_pb2.UnitChangeResponse) -> RenderableType:
        info = response.unit
        name = f"{info.apartment}/{info.unit}"
        if verb == "delete":
            return Text(f"{name} deleted: its records, versions, rollouts and route are gone")
        if verb == "wake":
            if not response.changed:
                return Text(f"{name} is not collected; nothing changed")
            return Text(f"{name} woken: starting {', '.join(response.started)} (they join "
                        "the routes once healthy)")
        if not response.changed:
            state = "stopped" if verb == "stop" else f"at {info.instances} instance(s)"
            return Text(f"{name} already {state}; nothing changed")
        if verb == "stop":
            return Text(f"{name} stopped: {len(response.stopped)} instance(s) drained and "
                        "stopped; its versions and history stay (deploy to start it again)")
        lines = [f"{name} {info.stable_version} scaled to {info.instances} instance(s)"]
        if response.started:
            lines.append(f"started {', '.join(response.started)} (they join the routes once "
                         "healthy)")
        if response.stopped:
            lines.append(f"drained and stopped {', '.join(response.stopped)}")
        return Text("\n".join(lines))

    return view
