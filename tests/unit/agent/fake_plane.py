"""A recording data plane for StreamAdapter tests: the real (pure) spec model and request
windows over a FakeClock, no HAProxy."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.dataplane import (
    DataPlaneSettings,
    DataPlaneSpec,
    DrainResult,
    ObservedServer,
    RequestRecord,
    ServerSpec,
    ServerState,
    UnitSpec,
    WindowSnapshot,
)
from agent.dataplane.windows import RequestWindows
from common.clock import FakeClock

__all__ = ["FakePlane"]


@dataclass
class FakePlane:
    """A data plane that records calls and keeps request windows like the real one."""

    clock: FakeClock
    settings: DataPlaneSettings = field(default_factory=DataPlaneSettings)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    life: list[str] = field(default_factory=list)
    _spec: DataPlaneSpec = field(default_factory=lambda: DataPlaneSpec("127.0.0.2"))

    def __post_init__(self) -> None:
        self.windows = RequestWindows(self.settings.log_bucket_s, self.settings.log_retention_s)

    @property
    def spec(self) -> DataPlaneSpec:
        return self._spec

    def serve(self, unit: str, instance: str, version: str = "1.0.0") -> None:
        record = RequestRecord(unit, version, instance, f"be.{unit}", 200, 3.0, "--", False)
        self.windows.count(unit, version, instance, 1, 0, self.clock.now())
        self.windows.record(record, self.clock.now())

    async def start(self) -> None:
        self.life.append("plane.start")

    async def close(self) -> None:
        self.life.append("plane.close")

    async def shutdown(self) -> None:
        self.life.append("plane.shutdown")

    async def ensure_unit(self, unit: str, port: int, health_path: str = "/healthz", *,
                          sticky: bool = False, retry_after_s: int = 0) -> None:
        self.calls.append(("ensure_unit", unit, port, health_path))
        current = self._spec.units.get(unit) or UnitSpec(unit, port)
        self._spec = self._spec.with_unit(dataclasses.replace(
            current, port=port, health_path=health_path, retry_after_s=retry_after_s))

    async def remove_unit(self, unit: str) -> None:
        self.calls.append(("remove_unit", unit))
        self._spec = self._spec.without_unit(unit)

    async def add_server(self, unit: str, server: str, addr: str, port: int, version: str,
                         weight: int = 0, state: ServerState = ServerState.READY) -> None:
        self.calls.append(("add_server", server, weight, str(state)))
        spec = ServerSpec(server, addr, port, version, weight, state)
        self._spec = self._spec.with_unit(self._spec.unit(unit).with_server(spec))

    async def remove_server(self, unit: str, server: str) -> None:
        self.calls.append(("remove_server", server))
        self._spec = self._spec.with_unit(self._spec.unit(unit).without_server(server))

    async def set_weights(self, unit: str, weights: Mapping[str, int]) -> None:
        self.calls.append(("set_weights", dict(weights)))
        self._spec = self._spec.with_unit(self._spec.unit(unit).with_weights(weights))

    async def set_state(self, unit: str, server: str, state: ServerState) -> None: ...

    async def drain_and_remove(self, unit: str, server: str,
                               timeout: float | None = None) -> DrainResult:
        self.calls.append(("drain_and_remove", server, timeout))
        await self.remove_server(unit, server)
        return DrainResult(server, True, 0.0)

    async def servers(self, unit: str) -> list[ObservedServer]:
        return []

    def window(self, unit: str, version: str | None = None,
               seconds: float = 60.0) -> list[WindowSnapshot]:
        return self.windows.snapshots(unit, self.clock.now(), version=version, seconds=seconds,
                                      host="h1")

    def completed_windows(self) -> list[WindowSnapshot]:
        return self.windows.take_completed(self.clock.now(), host="h1")

    def last_activity(self, unit: str, instance: str | None = None) -> float | None:
        return self.windows.last_activity(unit, instance)
