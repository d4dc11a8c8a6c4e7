"""The data plane as the rest of the agent sees it (a Protocol, so tests can fake it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from agent.dataplane.dataplane import DrainResult
from agent.dataplane.haproxy_output import ObservedServer
from agent.dataplane.model import ServerState
from agent.dataplane.windows import WindowSnapshot
from common.unit_spec import DEFAULT_HEALTH

__all__ = ["DataPlanePort"]


class DataPlanePort(Protocol):
    """What :class:`agent.dataplane.DataPlane` offers; weights are 0-256 per server."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def ensure_unit(
        self, unit: str, port: int, health_path: str = DEFAULT_HEALTH.path, *, sticky: bool = False,
        retry_after_s: int = 0,
    ) -> None: ...

    async def remove_unit(self, unit: str) -> None: ...

    async def add_server(
        self,
        unit: str,
        server: str,
        addr: str,
        port: int,
        version: str,
        weight: int = 0,
        state: ServerState = ServerState.READY,
    ) -> None: ...

    async def remove_server(self, unit: str, server: str) -> None: ...

    async def set_weights(self, unit: str, weights: Mapping[str, int]) -> None: ...

    async def set_state(self, unit: str, server: str, state: ServerState) -> None: ...

    async def drain_and_remove(
        self, unit: str, server: str, timeout: float | None = None
    ) -> DrainResult: ...

    async def servers(self, unit: str) -> list[ObservedServer]: ...

    def window(
        self, unit: str, version: str | None = None, seconds: float = 60.0
    ) -> list[WindowSnapshot]: ...

    def completed_windows(self) -> list[WindowSnapshot]: ...

    def last_activity(self, unit: str, instance: str | None = None) -> float | None: ...
