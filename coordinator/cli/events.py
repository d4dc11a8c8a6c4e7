"""`landlord events`: the cluster's recent events, and live ones with --follow.

``--type`` keeps the events of one type or family (``audit``; ``rollout`` matches
``rollout.step``, ``rollout.failed``, ...); it filters on this side of the stream. Audit
events (coordinator/api/audit.py) print as who, what and outcome.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.text import Text

from common.errors import InvalidArgument
from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, types_pb2
from coordinator.cli.arguments import parse_unit_ref
from coordinator.cli.client import AdminClient, CallFailed, ClientSettings
from coordinator.cli.context import OutputOption, output_of, settings_of
from coordinator.cli.durations import duration_to_proto, parse_duration
from coordinator.cli.output import OutputFormat, console, format_time, print_json_line
from coordinator.cli.tables import event_line

RECONNECTS = 5
"""How often --follow reopens the stream (from the last sequence seen) after a failover."""


def build_events_request(
    unit: str | None,
    apartment: str | None,
    follow: bool,
    since: str | None,
    after: int,
) -> admin_pb2.StreamEventsRequest:
    request = admin_pb2.StreamEventsRequest(follow=follow, after_sequence=after)
    if after < 0:
        raise InvalidArgument(f"--after: must be >= 0, got {after}", field="--after")
    if unit is not None:
        ref = parse_unit_ref(unit, "--unit")
        request.apartment, request.unit = ref.apartment, ref.unit
    elif apartment is not None:
        request.apartment = apartment
    if since is not None:
        request.history.CopyFrom(duration_to_proto(parse_duration(since, "--since")))
    return request


def type_matches(event_type: str, wanted: str | None) -> bool:
    """True when ``event_type`` is ``wanted`` or of its family (``rollout`` -> ``rollout.*``)."""
    return not wanted or event_type == wanted or event_type.startswith(wanted + ".")


_AUDIT_SHOWN = {"caller", "method", "outcome", "error"}


def audit_line(event: types_pb2.Event) -> Text:
    """An audit event: time, sequence, who, what (method, subject, essentials), outcome."""
    details = event.details
    subject = f"{event.apartment}/{event.unit}" if event.unit else event.apartment
    if event.version:
        subject += f"@{event.version}"
    outcome = details.get("outcome", "")
    if details.get("error"):
        outcome += f" ({details['error']})"
    parts = [format_time(event.time), f"#{event.sequence}", event.type,
             details.get("caller", "?"), details.get("method", "?")]
    if subject:
        parts.append(subject)
    parts.append(outcome or "?")
    parts.extend(f"{key}={value}" for key, value in sorted(details.items())
                 if key not in _AUDIT_SHOWN)
    return Text("  ".join(parts))


def line_of(event: types_pb2.Event) -> Text:
    return audit_line(event) if event.type == EventType.AUDIT else event_line(event)


async def stream_events(
    settings: ClientSettings,
    request: admin_pb2.StreamEventsRequest,
    fmt: OutputFormat,
    event_type: str | None = None,
) -> int:
    """Print events as they come; with follow, resume after the last one on failover."""
    out = console()
    seen = request.after_sequence
    received = False
    async with AdminClient(settings) as client:
        for attempt in range(RECONNECTS + 1 if request.follow else 1):
            if attempt:
                await asyncio.sleep(min(2.0, 0.25 * attempt))
            current = admin_pb2.StreamEventsRequest()
            current.CopyFrom(request)
            current.after_sequence = seen
            try:
                async for event in client.stream("StreamEvents", current, "stream events"):
                    shown: types_pb2.Event = event
                    seen = max(seen, shown.sequence)
                    received = True
                    if not type_matches(shown.type, event_type):
                        continue
                    if fmt is OutputFormat.JSON:
                        print_json_line(shown)
                    else:
                        out.print(line_of(shown), soft_wrap=True)
                if not request.follow:
                    return 0
            except CallFailed as err:
                # reconnect only to a stream that worked once (a failover), never to none
                if err.code != "UNAVAILABLE" or attempt == RECONNECTS or not received:
                    raise
    raise CallFailed("stream events", "UNAVAILABLE", "the event stream kept ending early")


def events(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = (
        False
    ),
    unit: Annotated[
        str | None, typer.Option(help="Only this unit (APARTMENT/UNIT).", show_default=False)
    ] = None,
    apartment: Annotated[str | None, typer.Option(help="Only this apartment.")] = None,
    since: Annotated[
        str | None, typer.Option(help="How far back, e.g. 10m (default: all kept).")
    ] = None,
    after: Annotated[int, typer.Option(help="Only events after this sequence number.")] = 0,
    event_type: Annotated[
        str | None,
        typer.Option("--type", help="Only this type or family, e.g. audit or rollout."),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Print events, oldest first (JSON: one object per line)."""
    request = build_events_request(unit, apartment, follow, since, after)
    settings = settings_of(ctx)
    asyncio.run(stream_events(settings.client, request, output_of(ctx, output), event_type))
