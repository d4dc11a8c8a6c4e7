"""What every command needs from the root options: where to connect and how to print."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from google.protobuf.message import Message
from rich.console import RenderableType

from coordinator.cli.client import ClientSettings, call_unary
from coordinator.cli.output import OutputFormat, print_json, print_rich

__all__ = [
    "CliSettings",
    "OutputOption",
    "UnitArg",
    "chosen_output",
    "emit",
    "output_of",
    "settings_of",
    "unary",
]


@dataclass(frozen=True)
class CliSettings:
    client: ClientSettings
    output: OutputFormat = OutputFormat.TABLE
    output_chosen: bool = False
    """True when --output (or LANDLORD_OUTPUT) was given, not left at its default."""


UnitArg = Annotated[str, typer.Argument(metavar="APARTMENT/UNIT", show_default=False)]
"""The unit a command is about, as APARTMENT/UNIT."""

OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        case_sensitive=False,
        help="table or json (overrides the global --output).",
        show_default=False,
    ),
]


def settings_of(ctx: typer.Context) -> CliSettings:
    settings = ctx.find_object(CliSettings)
    return settings if settings is not None else CliSettings(ClientSettings())


def output_of(ctx: typer.Context, override: OutputFormat | None) -> OutputFormat:
    return override if override is not None else settings_of(ctx).output


def chosen_output(ctx: typer.Context, override: OutputFormat | None) -> OutputFormat | None:
    """The format the user asked for (the command's --output, else the global one), None
    when neither was given."""
    if override is not None:
        return override
    settings = settings_of(ctx)
    return settings.output if settings.output_chosen else None


def unary(ctx: typer.Context, method: str, request: Message, what: str) -> Any:
    """Call ``method`` on the coordinators named by the root options."""
    return call_unary(settings_of(ctx).client, method, request, what)


def emit(
    ctx: typer.Context,
    override: OutputFormat | None,
    message: Message,
    view: Callable[[Any], RenderableType],
) -> None:
    """Print ``message`` as JSON, or as ``view(message)`` for people."""
    if output_of(ctx, override) is OutputFormat.JSON:
        print_json(message)
    else:
        print_rich(view(message))
