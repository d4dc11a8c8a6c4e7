"""Helpers for data plane integration tests (imported by conftest and the tests)."""

from __future__ import annotations

import random
import socket
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from agent.dataplane import DataPlane, DataPlaneSettings
from tests.support import async_eventually

BACKEND_SCRIPT = Path(__file__).with_name("dataplane_backend.py")
# Quick health checks so tests do not wait on servers coming up.
FAST = DataPlaneSettings(check_inter_ms=300, check_rise=1, check_fall=2, drain_poll_s=0.05)


PlaneFactory = Callable[..., Awaitable[DataPlane]]
"""The ``dataplanes`` fixture: ``await dataplanes(advertise=..., data_dir=...)``."""
BackendFactory = Callable[..., "Backend"]
"""The ``backend`` fixture: ``backend(name, version, addr, *args)``."""


def free_port(addr: str) -> int:
    """A port free on ``addr`` right now, from a range unlikely to be used by others."""
    for _ in range(200):
        port = random.randint(21000, 29999)
        with socket.socket() as probe:
            try:
                probe.bind((addr, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {addr}")


@dataclass
class Backend:
    name: str
    version: str
    addr: str
    port: int
    process: subprocess.Popen[bytes]


async def wait_all_up(plane: DataPlane, unit: str, count: int, timeout: float = 10.0) -> None:
    async def up() -> bool:
        servers = await plane.servers(unit)
        return len(servers) == count and all(s.status == "UP" for s in servers)

    await async_eventually(up, timeout=timeout, message=f"{count} servers of {unit} UP")
