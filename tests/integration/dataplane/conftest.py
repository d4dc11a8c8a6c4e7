"""Fixtures for data plane tests: backends as processes, data planes that clean up."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from agent.dataplane import DataPlane, DataPlaneSettings
from agent.dataplane.haproxy_process import HaproxyProcess
from tests.integration.dataplane.dataplane_fixtures import BACKEND_SCRIPT, FAST, Backend, free_port


@pytest.fixture
def backend() -> Iterator[Callable[..., Backend]]:
    """Factory: ``backend(name, version, addr, *extra_args)`` starts one and waits for it."""
    started: list[Backend] = []

    def start(name: str, version: str, addr: str = "127.0.0.3", *extra: str) -> Backend:
        for _ in range(5):
            port = free_port(addr)
            proc = subprocess.Popen(
                [sys.executable, str(BACKEND_SCRIPT), addr, str(port), version, name, *extra],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert proc.stdout is not None
            if proc.stdout.readline().strip() == b"ready":
                item = Backend(name, version, addr, port, proc)
                started.append(item)
                return item
            proc.kill()  # lost a race for the port
            proc.wait()
        raise RuntimeError("backend did not start")

    yield start
    for item in started:
        item.process.kill()
        item.process.wait()
        if item.process.stdout is not None:
            item.process.stdout.close()


@pytest.fixture
async def dataplanes() -> AsyncIterator[Callable[..., Awaitable[DataPlane]]]:
    """Factory of started DataPlanes; at the end every HAProxy they ran is killed."""
    roots: list[Path] = []
    planes: list[DataPlane] = []

    async def make(
        advertise: str = "127.0.0.2",
        data_dir: Path | None = None,
        settings: DataPlaneSettings = FAST,
    ) -> DataPlane:
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="lldp-"))
            roots.append(data_dir)
        plane = DataPlane(data_dir, advertise, settings=settings)
        planes.append(plane)
        await plane.start()
        return plane

    yield make
    for plane in planes:
        await plane.close()
    for plane in planes:
        process = HaproxyProcess(plane.paths, plane.settings.haproxy_binary)
        with contextlib.suppress(Exception):
            await process.stop(timeout=5)
        process.kill_all()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
