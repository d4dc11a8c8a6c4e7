"""Messages of the agent stream that both ends see alike (the protobuf is converted to
these at each end; the coordinator and agent keep their own views of everything else)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ReportedEvent", "RouteServer"]


@dataclass(frozen=True)
class ReportedEvent:
    """Something that happened on a host (limit_exceeded, recovery.*, gc.*, ...)."""

    type: str
    time: float
    message: str = ""
    apartment: str = ""
    unit: str = ""
    version: str = ""
    instance_id: str = ""
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteServer:
    """One server of a unit's data plane route."""

    server: str
    version: str
    address: str
    port: int
    weight: int
    state: str
    """ready, drain or maint."""
