"""SIGHUP never kills the agent: without TLS files it says there is nothing to reload."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.daemon import reload_certificates, run_daemon
from tests.unit.agent.fake_runtime import RecordingRuntime


async def test_sighup_on_a_standalone_agent_is_logged_not_fatal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.daemon")
    config = AgentConfig(host_id="h", data_dir=tmp_path / "data", bandwidth=False,
                         data_plane=False)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(config, runtime=RecordingRuntime(), stop=stop))
    async with asyncio.timeout(5):
        while signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGHUP)
    async with asyncio.timeout(5):
        while not any("nothing to reload" in r.getMessage()  # noqa: ASYNC110
                      for r in caplog.records):
            await asyncio.sleep(0.01)
    assert not daemon.done()
    stop.set()
    assert await asyncio.wait_for(daemon, 10) == 0
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # handed back at exit
    assert reload_certificates(None) is False
