"""Forged request windows cannot decide a canary.

Besides the three honest traffic agents of test_rollout_service (h2..h4), h5 reports, every
100 ms, heavy windows for the canary instances placed on other hosts: all errors when the
canary is good, no errors when it is bad. Its own instances' windows are honest and count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from agent.stream.endpoint import ChangeBatch
from agent.stream.session import CoordinatorStream, StreamSettings
from common.resources import Resources
from common.stream_messages import MetricsWindow, Registration
from coordinator.api.rollout_proto import deploy_from_pb
from coordinator.app import Coordinator
from coordinator.fleet.report_scope import DropKind
from coordinator.rollouts.record import Phase
from coordinator.rollouts.service import RolloutService
from tests.integration.rollouts.test_rollout_service import (
    TrafficRuntime,
    _connected,
    canary_request,
    ended,
    fleet,
)
from tests.support import async_eventually

__all__ = ["fleet"]

CANARY = "1.1.0"


class ForgingRuntime(TrafficRuntime):
    def __init__(self, identity: Registration, error_rates: dict[str, float],
                 forged_error_rate: float) -> None:
        super().__init__(identity, error_rates)
        self.forged_error_rate = forged_error_rate
        self.forged = 0

    async def next_changes(self, timeout: float) -> ChangeBatch:
        batch = await super().next_changes(timeout)
        now = time.time()
        for server in self.routes.get("shop/web", []):
            iid, version = str(server["server"]), str(server["version"])
            if version != CANARY or iid in self.instances:
                continue
            requests = 5_000
            batch.windows.append(MetricsWindow(
                "shop", "web", version, iid, "h5", now - 0.1, now, requests,
                round(requests * self.forged_error_rate)))
            self.forged += 1
        return batch


@pytest.fixture
async def forger(coordinator: Coordinator, fleet: Any, request: pytest.FixtureRequest) -> Any:
    """h5 joins once the fleet fixture's stable version runs on h2..h4."""
    rates, forged_rate = request.param
    identity = Registration("h5", "default", "127.0.0.5", Resources(cpu=4.0, memory=8 << 30),
                            {}, ("cpu", "memory"), "test")
    runtime = ForgingRuntime(identity, rates, forged_rate)
    stream = CoordinatorStream(runtime, StreamSettings(
        (coordinator.config.listen,), backoff_initial=0.05, backoff_max=0.3))
    task = asyncio.create_task(stream.run())
    try:
        yield runtime
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("fleet", "forger", "outcome"),
    [
        ({CANARY: 0.0}, ({CANARY: 0.0}, 1.0), Phase.PROMOTED),  # forged errors: no rollback
        ({CANARY: 1.0}, ({CANARY: 1.0}, 0.0), Phase.ROLLED_BACK),  # forged success: no promotion
    ],
    indirect=["fleet", "forger"],
)
async def test_forged_windows_for_other_hosts_canaries_do_not_count(
    coordinator: Coordinator, rollouts: RolloutService, fleet: Any, forger: ForgingRuntime,
    outcome: Phase,
) -> None:
    await async_eventually(lambda: _connected(coordinator, 4), timeout=10)
    record = await rollouts.deploy(deploy_from_pb(canary_request(CANARY)))
    end = await async_eventually(lambda: ended(rollouts, record.rollout_id), timeout=30)
    assert end.phase is outcome, (end.phase, end.failure)
    assert forger.forged > 0, "the forger saw a canary on another host"
    assert coordinator.sessions.foreign_dropped[DropKind.WINDOW] > 0
