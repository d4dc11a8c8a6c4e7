"""The daemon: READY once supervising, watchdog pings, orderly stop that keeps containers."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.daemon import run_daemon
from agent.service import AgentService
from tests.unit.agent.fake_runtime import RecordingRuntime


async def test_ready_watchdog_extensions_and_stop(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    config = AgentConfig(host_id="h", data_dir=tmp_path / "data", bandwidth=False,
                         watchdog_interval=0.05)
    runtime = RecordingRuntime()
    stop = asyncio.Event()
    seen: list[str] = []

    async def extension(service: AgentService, stopping: asyncio.Event) -> None:
        seen.append(service.config.host_id)
        await stopping.wait()
        seen.append("extension stopped")

    daemon = asyncio.create_task(run_daemon(config, runtime=runtime, extensions=[extension],
                                            stop=stop))
    loop = asyncio.get_running_loop()
    messages = [(await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)).decode()
                for _ in range(3)]
    assert messages[0].startswith("READY=1")
    assert messages[1:] == ["WATCHDOG=1", "WATCHDOG=1"]
    stop.set()
    assert await asyncio.wait_for(daemon, 10) == 0
    assert seen == ["h", "extension stopped"]
    while not (await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)).startswith(b"STOPPING"):
        pass
    assert not runtime.by_call("stop") and not runtime.by_call("kill")
    sock.close()
