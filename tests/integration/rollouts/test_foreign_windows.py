"""Request windows count per entry host, and forged ones still cannot decide a canary.

Besides the three honest traffic agents of test_rollout_service (h2..h4), h5 is an entry
host: every 100 ms it reports, for every server of the unit's route (the instances of every
host, as its HAProxy would), an honest window claiming to come from h9, and heavy forged
windows the coordinator must drop: the canary's version on a stable instance, an invented
instance, another unit's claim on a canary instance. Forged windows are all errors when the
canary is good and have none when it is bad. The honest windows count, as h5's (the
stream's host, not the one they claim); the forged ones change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from agent.stream.endpoint import ChangeBatch
from agent.stream.session import CoordinatorStream, StreamSettings
from common.latency import LatencySketch
from common.resources import Resources
from common.stream_messages import MetricsWindow, Registration
from coordinator.api.rollout_proto import deploy_from_pb
from coordinator.app import Coordinator
from coordinator.fleet.report_scope import DropKind
from coordinator.rollouts.record import Phase
from coordinator.rollouts.service import RolloutService
from tests.integration.rollouts.test_rollout_service import (
    RPS,
    TrafficRuntime,
    _connected,
    canary_request,
    ended,
    fleet,
)
from tests.support import async_eventually

__all__ = ["fleet"]

CANARY = "1.1.0"
CLAIMED = "h9"
"""The entry host h5's honest windows claim (the coordinator records them as h5's)."""
FORGED_REQUESTS = 5_000


class EntryRuntime(TrafficRuntime):
    def __init__(self, identity: Registration, error_rates: dict[str, float],
                 forged_error_rate: float) -> None:
        super().__init__(identity, error_rates)
        self.forged_error_rate = forged_error_rate
        self.forged = 0
        self.remote: set[str] = set()
        """Instances of other hosts h5 reported traffic to."""
        self._entered = time.time()

    def _window(self, unit: str, version: str, iid: str, host: str, start: float,
                end: float, requests: int, error_rate: float) -> MetricsWindow:
        sketch = LatencySketch()
        if requests:
            sketch.add(12.0, requests)
        return MetricsWindow("shop", unit, version, iid, host, start, end, requests,
                             round(requests * error_rate), sketch)

    async def next_changes(self, timeout: float) -> ChangeBatch:
        batch = await super().next_changes(timeout)  # the windows of h5's own instances
        now = time.time()
        start, self._entered = self._entered, now
        route = self.routes.get("shop/web", [])
        total = sum(int(s["weight"]) for s in route) or 1  # type: ignore[call-overload]
        for server in route:
            iid, version = str(server["server"]), str(server["version"])
            if iid in self.instances:
                continue
            # honest: what entered here and went to another host's instance
            requests = round(RPS * (now - start) * int(server["weight"]) / total)  # type: ignore[call-overload]
            batch.windows.append(self._window("web", version, iid, CLAIMED, start, now,
                                              requests, self.error_rates.get(version, 0.0)))
            self.remote.add(iid)
            # forged: the canary's version on a stable instance; another unit's claim
            forged = (("web", CANARY, iid) if version != CANARY else ("api", CANARY, iid))
            batch.windows.append(self._window(*forged, self._identity.host_id, start, now,
                                              FORGED_REQUESTS, self.forged_error_rate))
            self.forged += 1
        batch.windows.append(self._window("web", CANARY, "invented", self._identity.host_id,
                                          start, now, FORGED_REQUESTS,
                                          self.forged_error_rate))
        self.forged += 1
        return batch


@pytest.fixture
async def forger(coordinator: Coordinator, fleet: Any, request: pytest.FixtureRequest) -> Any:
    """h5 joins once the fleet fixture's stable version runs on h2..h4."""
    rates, forged_rate = request.param
    identity = Registration("h5", "default", "127.0.0.5", Resources(cpu=4.0, memory=8 << 30),
                            {}, ("cpu", "memory"), "test")
    runtime = EntryRuntime(identity, rates, forged_rate)
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
async def test_remote_windows_count_as_the_entry_hosts_and_forged_ones_do_not(
    coordinator: Coordinator, rollouts: RolloutService, fleet: Any, forger: EntryRuntime,
    outcome: Phase,
) -> None:
    await async_eventually(lambda: _connected(coordinator, 4), timeout=10)
    record = await rollouts.deploy(deploy_from_pb(canary_request(CANARY)))
    end = await async_eventually(lambda: ended(rollouts, record.rollout_id), timeout=30)
    assert end.phase is outcome, (end.phase, end.failure)
    assert forger.forged > 0 and forger.remote, "h5 saw instances on other hosts"
    assert coordinator.sessions.foreign_dropped[DropKind.WINDOW] > 0

    kept = coordinator.windows.windows("shop", "web")
    assert CLAIMED not in {w.host_id for w in kept}, "a window went to the host it claimed"
    assert {w.instance_id for w in kept if w.host_id == "h5"} & forger.remote, (
        "h5's windows for other hosts' instances count, as h5's")
    assert "invented" not in {w.instance_id for w in kept}
    assert all(w.requests < FORGED_REQUESTS for w in kept), "a forged window counted"
