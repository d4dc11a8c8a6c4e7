"""`landlord instances logs|exec`: an instance's output, from its host through the leader.

Output is written as it comes, byte for byte. Logs are Docker's one stream of the
container's stdout and stderr, in order, written to stdout; an exec's stdout and stderr are
kept apart. `exec` exits with the command's own exit code (124 when it was killed at its
timeout, as `timeout(1)` does); a refused call exits 1 with one line, as every command.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Annotated

import typer

from common.gen.landlord.v1 import admin_pb2
from common.proto_values import duration_to_pb
from coordinator.cli.client import AdminClient
from coordinator.cli.context import settings_of
from coordinator.cli.durations import parse_duration

__all__ = ["TIMED_OUT", "register"]

TIMED_OUT = 124
"""`instances exec`'s exit status for a command killed at its timeout."""


async def _print(ctx: typer.Context, method: str, request: object, what: str) -> int:
    """Write the streamed output; the exit code of its end (-1 without one)."""
    code = -1
    async with AdminClient(settings_of(ctx).client) as client:
        async for piece in client.stream(method, request, what):  # type: ignore[arg-type]
            if piece.data:
                out = sys.stderr.buffer if piece.stderr else sys.stdout.buffer
                out.write(piece.data)
                out.flush()
            if piece.end:
                code = piece.exit_code
    return code


def logs(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument(metavar="INSTANCE", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing new output.")] = False,
    since: Annotated[str | None, typer.Option(
        help="Only output from this long ago on, e.g. 10m.", show_default=False)] = None,
    tail: Annotated[int, typer.Option(help="Only the last lines (0: all).", min=0)] = 0,
) -> None:
    """Print an instance's container output (stdout and stderr), on any host."""
    request = admin_pb2.InstanceLogsRequest(instance_id=instance_id, follow=follow, tail=tail)
    if since is not None:
        request.since.CopyFrom(duration_to_pb(parse_duration(since, "--since")))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a follow quietly
        asyncio.run(_print(ctx, "InstanceLogs", request, f"logs of {instance_id}"))


def exec_command(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument(metavar="INSTANCE", show_default=False)],
    command: Annotated[list[str], typer.Argument(
        metavar="-- COMMAND...", help="The command and its arguments (no shell).",
        show_default=False)],
    timeout: Annotated[str, typer.Option(
        help="Kill the command after this long (at most 5m).")] = "30s",
) -> None:
    """Run a command in an instance's container (admin only); its output is streamed and
    its exit code is this command's. Options go before INSTANCE: everything after it is
    the command."""
    if command[:1] == ["--"]:  # click keeps the separator when options may not follow
        command = command[1:]
    if not command:
        raise typer.BadParameter("name the command to run after --")
    request = admin_pb2.ExecInstanceRequest(
        instance_id=instance_id, argv=command,
        timeout=duration_to_pb(parse_duration(timeout, "--timeout")))
    code = asyncio.run(_print(ctx, "ExecInstance", request, f"exec in {instance_id}"))
    raise typer.Exit(TIMED_OUT if code < 0 else code)


def register(app: typer.Typer) -> None:
    """Add `logs` and `exec` to the `instances` commands."""
    app.command("logs")(logs)
    app.command("exec", context_settings={"allow_interspersed_args": False})(exec_command)
