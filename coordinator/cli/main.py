"""`landlord`: the admin CLI of a Landlord cluster.

Exit codes: 0 success, 1 error, 2 usage, 3 a watched rollout failed or was rolled back.
Errors are one line on stderr: ``landlord: error: <what failed>: <details>``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from common.errors import LandlordError
from common.transport import TlsSettings
from coordinator.cli import (
    apply,
    certs,
    cluster,
    deploy,
    events,
    fleet,
    host_removal,  # noqa: F401  # registers hosts drain, drain-status, decommission
    instance_output,
    pausing,
    rebalance,  # noqa: F401  # registers units rebalance, rebalance-status
    rollout,
    units,
)
from coordinator.cli.client import DEFAULT_ADDRESS, CallFailed, ClientSettings, parse_addresses
from coordinator.cli.context import CliSettings
from coordinator.cli.exit_codes import error_line, exit_code_for_error
from coordinator.cli.output import OutputFormat

__all__ = ["app", "main"]


class LandlordGroup(TyperGroup):
    """The error boundary: known failures become one line on stderr and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (CallFailed, LandlordError) as err:
            typer.echo(error_line(err), err=True)
            raise typer.Exit(exit_code_for_error(err)) from None


app = typer.Typer(
    name="landlord",
    cls=LandlordGroup,
    help="Admin CLI of Landlord: publish unit versions, deploy them, follow rollouts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        try:
            version = metadata.version("landlord")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        typer.echo(f"landlord {version}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    coordinator: Annotated[
        str,
        typer.Option(
            "--coordinator",
            "-c",
            envvar="LANDLORD_COORDINATOR",
            help="Coordinator address(es), comma-separated HOST:PORT; the leader is followed.",
        ),
    ] = DEFAULT_ADDRESS,
    output: Annotated[
        OutputFormat,
        typer.Option("--output", "-o", envvar="LANDLORD_OUTPUT", case_sensitive=False),
    ] = OutputFormat.TABLE,
    timeout: Annotated[
        float, typer.Option(help="Seconds each call may take.", min=0.1, envvar="LANDLORD_TIMEOUT")
    ] = 10.0,
    tls_ca: Annotated[
        str, typer.Option(envvar="LANDLORD_TLS_CA", help="CA bundle (PEM) of the coordinators.")
    ] = "",
    tls_cert: Annotated[
        str, typer.Option(envvar="LANDLORD_TLS_CERT", help="Client certificate (PEM).")
    ] = "",
    tls_key: Annotated[
        str, typer.Option(envvar="LANDLORD_TLS_KEY", help="Client private key (PEM).")
    ] = "",
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    del version  # handled by its eager callback
    tls = TlsSettings(ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key)
    client = ClientSettings(addresses=parse_addresses(coordinator), timeout=timeout, tls=tls)
    source = ctx.get_parameter_source("output")
    chosen = source is not None and source.name != "DEFAULT"  # given, or LANDLORD_OUTPUT
    ctx.obj = CliSettings(client=client, output=output, output_chosen=chosen)


app.add_typer(units.app, name="units")
app.command("deploy", no_args_is_help=True)(deploy.deploy)
app.command("apply", no_args_is_help=True)(apply.apply)
app.add_typer(rollout.app, name="rollout")
app.command("rollback", no_args_is_help=True)(rollout.rollback)
app.add_typer(fleet.hosts_app, name="hosts")
app.add_typer(fleet.instances_app, name="instances")
instance_output.register(fleet.instances_app)
pausing.register_units(units.app)
pausing.register_instances(fleet.instances_app)
app.command("events")(events.events)
app.add_typer(fleet.gc_app, name="gc")
app.command("leader")(fleet.leader)
app.add_typer(certs.app, name="certs")
app.add_typer(cluster.app, name="cluster")


def main() -> None:
    app(prog_name="landlord")


if __name__ == "__main__":
    main()
