"""The rollout service end to end on a real etcd and a real in-process coordinator.

Agents are the real stream client over an in-memory runtime (no Docker here) that reports,
every 100 ms, a request window per running instance: its share of 400 rps follows the
weights the coordinator last sent in the unit's route, with a per-version error rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from agent.stream.endpoint import ChangeBatch
from agent.stream.session import CoordinatorStream, StreamSettings
from common.errors import FailedPrecondition, InsufficientResources, InvalidArgument
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.latency import LatencySketch
from common.resources import Resources
from common.stream_messages import MetricsWindow, Registration
from coordinator.api.rollout_proto import deploy_from_pb
from coordinator.app import Coordinator
from coordinator.rollouts.record import Control, Phase, RolloutRecord, decode_record
from coordinator.rollouts.runner import RunnerSettings
from coordinator.rollouts.service import RolloutService
from coordinator.rollouts.status import RolloutStatus
from tests.e2e.simulated_agent import FakeRuntime
from tests.support import async_eventually

RPS = 400.0


class TrafficRuntime(FakeRuntime):
    """FakeRuntime that also reports request windows shaped by the route's weights."""

    def __init__(self, identity: Registration, error_rates: dict[str, float]) -> None:
        super().__init__(identity, ("demo:1",), start_delay=0.05)
        self.error_rates = error_rates
        self._last = time.time()

    async def next_changes(self, timeout: float) -> ChangeBatch:
        batch = await super().next_changes(min(timeout, 0.1))
        now = time.time()
        elapsed, self._last = now - self._last, now
        route = self.routes.get("shop/web", [])
        total = sum(int(s["weight"]) for s in route) or 1  # type: ignore[call-overload]
        for server in route:
            inst = self.instances.get(str(server["server"]))
            if inst is None or inst.state != "running":
                continue
            requests = round(RPS * elapsed * int(server["weight"]) / total)  # type: ignore[call-overload]
            rate = self.error_rates.get(inst.version, 0.0)
            sketch = LatencySketch()
            if requests:
                sketch.add(12.0, requests)
            batch.windows.append(
                MetricsWindow(
                    "shop",
                    "web",
                    inst.version,
                    inst.instance_id,
                    inst.host_id,
                    now - elapsed,
                    now,
                    requests,
                    round(requests * rate),
                    sketch,
                )
            )
        return batch


class Agents:
    def __init__(self, coordinator: Coordinator, error_rates: dict[str, float]) -> None:
        self.runtimes: list[TrafficRuntime] = []
        self.tasks: list[asyncio.Task[None]] = []
        for n in (2, 3, 4):
            identity = Registration(
                f"h{n}",
                "default",
                f"127.0.0.{n}",
                Resources(cpu=4.0, memory=8 << 30),
                {},
                ("cpu", "memory"),
                "test",
            )
            runtime = TrafficRuntime(identity, error_rates)
            stream = CoordinatorStream(
                runtime,
                StreamSettings((coordinator.config.listen,), backoff_initial=0.05, backoff_max=0.3),
            )
            self.runtimes.append(runtime)
            self.tasks.append(asyncio.create_task(stream.run()))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def weighted_versions(self) -> set[str]:
        """Versions that have weight in every host's route of the unit."""
        found = set()
        for runtime in self.runtimes:
            for server in runtime.routes.get("shop/web", []):
                if int(server["weight"]) > 0:  # type: ignore[call-overload]
                    found.add(str(server["version"]))
        return found

    def versions_running(self) -> set[str]:
        return {i.version for r in self.runtimes for i in r.instances.values()}


async def publish(admin: Any, version: str, env: str, service_port: int = 9000,
                  apartment: str = "shop", unit: str = "web") -> None:
    await admin.PublishVersion(
        admin_pb2.PublishVersionRequest(
            spec=types_pb2.UnitSpec(
                apartment=apartment,
                unit=unit,
                image="demo:1",
                service_port=service_port,
                env={"BUILD": env},
                resources=types_pb2.Resources(cpu_millis=250, memory_bytes=64 << 20),
            ),
            version=version,
            changes=types_pb2.ChangeSet(features=[f"build {env}"]),
        )
    )


def canary_request(version: str, replicas: int = 2) -> admin_pb2.DeployRequest:
    request = admin_pb2.DeployRequest(
        apartment="shop",
        unit="web",
        version=version,
        replicas=replicas,
        strategy=types_pb2.STRATEGY_CANARY,
    )
    request.canary.steps.extend([25, 100])
    request.canary.monitor.FromMilliseconds(800)
    request.canary.step_delay.FromMilliseconds(100)
    request.canary.inconclusive_deadline.FromSeconds(5)
    request.criteria.max_error_rate = 0.05
    request.criteria.min_requests = 20
    return request


async def ended(service: RolloutService, rollout_id: str) -> RolloutRecord:
    record = service.get("shop", "web", rollout_id)
    assert record.terminal, (record.public_phase(), record.seq, record.steps[-1:])
    assert rollout_id not in service.runners, "its last actions are done"
    return record


async def running_web(coordinator: Coordinator, count: int) -> None:
    async def ready() -> bool:
        stable = coordinator.state.instances_of("shop", "web")
        seen = [coordinator.known.known_state(i.instance_id) for i in stable]
        return len(seen) == count and all(s is not None and s.routable for s in seen)

    await async_eventually(ready, timeout=10)


@pytest.fixture
async def fleet(
    coordinator: Coordinator, admin: Any, rollouts: RolloutService, request: pytest.FixtureRequest
) -> Any:
    rates: dict[str, float] = dict(getattr(request, "param", {}))
    agents = Agents(coordinator, rates)
    try:
        await async_eventually(lambda: _connected(coordinator, 3), timeout=10)
        await publish(admin, "1.0.0", "one")
        first = await rollouts.deploy(deploy_from_pb(
            admin_pb2.DeployRequest(apartment="shop", unit="web", version="1.0.0", replicas=2)
        ))
        done = await async_eventually(lambda: ended(rollouts, first.rollout_id), timeout=30)
        assert done.phase is Phase.PROMOTED, done.failure
        await running_web(coordinator, 2)
        await publish(admin, "1.1.0", "two")
        yield agents
    finally:
        await agents.stop()


async def _connected(coordinator: Coordinator, count: int) -> bool:
    return len(coordinator.known.placeable_hosts("default")) == count


async def test_good_canary_reaches_every_host_and_promotes(
    rollouts: RolloutService, fleet: Agents
) -> None:
    record = await rollouts.deploy(deploy_from_pb(canary_request("1.1.0")))
    end = await async_eventually(lambda: ended(rollouts, record.rollout_id), timeout=30)

    assert end.phase is Phase.PROMOTED, end.failure
    assert [s.outcome for s in end.steps] == ["passed", "passed"]
    assert all(s.canary is not None and s.canary.requests >= 20 for s in end.steps)
    assert rollouts.registry.unit("shop", "web").stable_version == "1.1.0"
    await async_eventually(lambda: _only(fleet, "1.1.0"), timeout=10)
    kinds = [e.type for e in rollouts.state.event_history()]
    assert "rollout.started" in kinds and "rollout.promoted" in kinds


async def test_a_sticky_deploy_becomes_the_units_default(
    rollouts: RolloutService, fleet: Agents
) -> None:
    request = canary_request("1.1.0")
    request.sticky = True
    record = await rollouts.deploy(deploy_from_pb(request))
    assert record.settings.sticky
    end = await async_eventually(lambda: ended(rollouts, record.rollout_id), timeout=30)
    assert end.phase is Phase.PROMOTED, end.failure
    assert rollouts.registry.unit("shop", "web").sticky
    assert not rollouts.state.routes[("shop", "web")].value.sticky  # promoted: not sticky
    # a deploy that does not say inherits the default; --no-sticky turns it off
    inherited = await rollouts.deploy(deploy_from_pb(canary_request("1.0.0")))
    assert inherited.settings.sticky
    await async_eventually(lambda: ended(rollouts, inherited.rollout_id), timeout=30)
    request = canary_request("1.1.0")
    request.sticky = False
    off = await rollouts.deploy(deploy_from_pb(request))
    assert not off.settings.sticky
    await async_eventually(lambda: ended(rollouts, off.rollout_id), timeout=30)
    assert not rollouts.registry.unit("shop", "web").sticky


async def _only(agents: Agents, version: str) -> bool:
    return agents.weighted_versions() == {version} and agents.versions_running() == {version}


@pytest.mark.parametrize("fleet", [{"1.1.0": 0.5}], indirect=True)
async def test_bad_canary_is_rolled_back_on_every_host(
    rollouts: RolloutService, fleet: Agents
) -> None:
    record = await rollouts.deploy(deploy_from_pb(canary_request("1.1.0")))
    end = await async_eventually(lambda: ended(rollouts, record.rollout_id), timeout=30)

    assert end.phase is Phase.ROLLED_BACK
    assert any("error rate" in r for r in end.failure)
    assert end.steps[0].outcome == "failed" and end.steps[0].canary is not None
    await async_eventually(lambda: _only(fleet, "1.0.0"), timeout=10)
    unit = rollouts.registry.unit("shop", "web")
    assert (unit.state, unit.stable_version) == ("running", "1.0.0")
    kinds = [e.type for e in rollouts.state.event_history()]
    assert "rollout.failed" in kinds and "rollout.rolled_back" in kinds


async def test_a_new_runner_resumes_a_rollout_mid_switch(
    coordinator: Coordinator, rollouts: RolloutService, fleet: Agents
) -> None:
    request = canary_request("1.1.0")
    request.canary.monitor.FromSeconds(2)
    record = await rollouts.deploy(deploy_from_pb(request))

    async def switching() -> bool:
        current = rollouts.get("shop", "web", record.rollout_id)
        return current.phase is Phase.SWITCHING

    await async_eventually(switching, timeout=10)
    await rollouts.stop()  # the leader's runners die mid-step
    successor = coordinator.rollout_service(RunnerSettings(0.05, 0.2))
    task = asyncio.create_task(successor.lead())
    try:
        end = await async_eventually(lambda: ended(successor, record.rollout_id), timeout=30)
        assert end.phase is Phase.PROMOTED, end.failure
        assert len(fleet.versions_running()) == 1
        assert sum(len(r.instances) for r in fleet.runtimes) == 2, "nothing started twice"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_deploys_that_cannot_start_are_refused(
    rollouts: RolloutService, fleet: Agents
) -> None:
    with pytest.raises(FailedPrecondition, match=r"2\.0\.0 is not published"):
        await rollouts.deploy(deploy_from_pb(canary_request("2.0.0")))
    with pytest.raises(FailedPrecondition, match=r"already runs 1\.0\.0"):
        await rollouts.deploy(deploy_from_pb(canary_request("1.0.0")))
    # 200 replicas are past one etcd transaction but not the bound: refused for room only
    with pytest.raises(InsufficientResources, match="cpu"):
        await rollouts.deploy(deploy_from_pb(canary_request("1.1.0", replicas=200)))
    with pytest.raises(InvalidArgument, match="1000"):
        await rollouts.deploy(deploy_from_pb(canary_request("1.1.0", replicas=1001)))

    slow = canary_request("1.1.0")
    slow.canary.monitor.FromSeconds(60)
    active = await rollouts.deploy(deploy_from_pb(slow))
    with pytest.raises(FailedPrecondition, match="already has an active rollout"):
        await rollouts.deploy(deploy_from_pb(canary_request("1.1.0")))
    aborted = await rollouts.control_rollout("shop", "web", Control.ABORT)
    assert aborted.rollout_id == active.rollout_id
    end = await async_eventually(lambda: ended(rollouts, active.rollout_id), timeout=30)
    assert end.phase is Phase.ABORTED


async def test_fast_rollback_after_a_promotion(rollouts: RolloutService, fleet: Agents) -> None:
    record = await rollouts.deploy(deploy_from_pb(canary_request("1.1.0")))
    await async_eventually(lambda: ended(rollouts, record.rollout_id), timeout=30)
    back = await rollouts.rollback("shop", "web")
    assert back.from_version == "1.1.0" and back.to_version == "1.0.0"
    end = await async_eventually(lambda: ended(rollouts, back.rollout_id), timeout=30)
    assert end.phase is Phase.PROMOTED and end.steps[0].outcome == "passed"
    await async_eventually(lambda: _only(fleet, "1.0.0"), timeout=10)
    assert rollouts.registry.unit("shop", "web").stable_version == "1.0.0"
    assert [r.rollout_id for r in rollouts.history("shop", "web")][:2] == [
        back.rollout_id,
        record.rollout_id,
    ]


async def test_no_rollback_onto_another_apartments_entry_point(
    coordinator: Coordinator, admin: Any, rollouts: RolloutService, fleet: Agents
) -> None:
    """shop/web moves from service port 9000 to 9100, blog/db takes 9000: the way back to
    1.0.0 (on 9000) would share blog's entry point, and is refused without naming it."""
    await publish(admin, "1.2.0", "three", service_port=9100)
    record = await rollouts.deploy(deploy_from_pb(canary_request("1.2.0")))
    end = await async_eventually(lambda: ended(rollouts, record.rollout_id), timeout=30)
    assert end.phase is Phase.PROMOTED
    await publish(admin, "1.0.0", "db", service_port=9000, apartment="blog", unit="db")
    await rollouts.deploy(deploy_from_pb(
        admin_pb2.DeployRequest(apartment="blog", unit="db", version="1.0.0")))
    await async_eventually(lambda: _routed_on(coordinator, "blog", "db", 9000), timeout=10)
    with pytest.raises(FailedPrecondition) as refused:
        await rollouts.rollback("shop", "web")
    assert str(refused.value) == (
        "shop/web 1.0.0 serves on service port 9000, the entry point of a unit of another "
        "apartment in building default; publish a version with another service port")
    assert rollouts.registry.unit("shop", "web").stable_version == "1.2.0"


async def _routed_on(coordinator: Coordinator, apartment: str, unit: str, port: int) -> bool:
    found = coordinator.state.routes.get((apartment, unit))
    return found is not None and found.value.service_port == port


async def test_a_watch_refreshes_the_live_figures_of_a_monitored_step(
    rollouts: RolloutService, fleet: Agents
) -> None:
    slow = canary_request("1.1.0")
    slow.canary.monitor.FromSeconds(60)  # the record stays still while the step is watched
    record = await rollouts.deploy(deploy_from_pb(slow))
    live: list[RolloutStatus] = []

    async def watch() -> None:
        async for status in rollouts.watch("shop", "web", record.rollout_id, refresh=0.3):
            if status.measured_live and status.record.phase is Phase.SWITCHING:
                live.append(status)
            if len(live) == 3:
                return

    await asyncio.wait_for(watch(), timeout=20)
    assert all(s.record == live[0].record for s in live), "refreshed, the record unchanged"
    requests = [sum(t.figures.requests for t in s.split if t.figures) for s in live]
    assert requests == sorted(requests) and requests[-1] > requests[0], requests
    assert {t.version for t in live[-1].split} == {"1.0.0", "1.1.0"}
    assert live[-1].hosts, "per-host figures while measured live"
    await rollouts.control_rollout("shop", "web", Control.ABORT)
    end = await async_eventually(lambda: ended(rollouts, record.rollout_id), timeout=30)
    assert end.phase is Phase.ABORTED


async def test_a_watch_sees_every_change_of_the_record_however_short(
    rollouts: RolloutService, fleet: Agents
) -> None:
    record = await rollouts.deploy(deploy_from_pb(canary_request("1.1.0")))
    written: list[RolloutRecord] = []
    stop = rollouts.state.watch_rollouts(
        lambda key, rollout_id, value: written.append(decode_record(value))
        if rollout_id == record.rollout_id and value is not None else None)
    watched: list[RolloutRecord] = []
    try:
        # refresh far away: only the record's changes are sent
        async for status in rollouts.watch("shop", "web", record.rollout_id, refresh=600):
            watched.append(status.record)
    finally:
        stop()
    assert watched[-1].phase is Phase.PROMOTED, watched[-1].failure
    # the first is the record as it was when the watch began; then each one written
    assert watched[1:] == written, ([r.phase for r in watched], [r.phase for r in written])
    phases = [r.phase for r in watched]
    assert Phase.SWITCHING in phases and Phase.COMPLETING in phases, phases
