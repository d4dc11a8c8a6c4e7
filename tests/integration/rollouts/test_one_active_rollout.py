"""One active rollout per unit on a real etcd and real in-process coordinators.

20 Deploys at once to one unit once left several rollouts active together, the extra ones
retrying "invalid transition" forever. Now the unit's active-rollout key is claimed in the
transaction that creates the rollout: exactly one Deploy wins, the others are refused
(FAILED_PRECONDITION naming the winner), a new leader finds the key consistent, and the
active rollouts an older release's race left behind are reduced to one when a leader takes
over.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import grpc
from local_cluster.etcd import EtcdProcess

from agent.stream.session import CoordinatorStream, StreamSettings
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc
from common.resources import Resources
from common.stream_messages import Registration
from coordinator.api.rollout_proto import deploy_from_pb
from coordinator.app import Coordinator
from coordinator.rollouts.controls import new_rollout
from coordinator.rollouts.record import Control, Phase, RolloutRecord, encode_record
from coordinator.rollouts.runner import RunnerSettings
from coordinator.rollouts.service import RolloutService
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.state.records import encode
from coordinator.state.store import EtcdStore, Txn
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.rollouts.test_rollout_service import (
    Agents,
    TrafficRuntime,
    canary_request,
    ended,
    fleet,
    publish,
)
from tests.support import async_eventually

__all__ = ["fleet"]  # the fixture: a unit running 1.0.0 on three hosts, 1.1.0 published

UNIT = ("shop", "web")


def slow_canary() -> admin_pb2.DeployRequest:
    """A canary whose first step is watched for a minute: it stays active meanwhile."""
    request = canary_request("1.1.0")
    request.canary.monitor.FromSeconds(60)
    return request


async def deploy_at_once(admin: Any, count: int = 20) -> tuple[str, list[grpc.aio.AioRpcError]]:
    """``count`` concurrent Deploys; the id of the one that won and the refusals."""
    results = await asyncio.gather(*(admin.Deploy(slow_canary()) for _ in range(count)),
                                   return_exceptions=True)
    won = [r.rollout.rollout_id for r in results if isinstance(r, admin_pb2.DeployResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1, (won, {(e.code(), e.details()) for e in refused})
    assert len(refused) == count - 1, results
    for error in refused:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (error.code(),
                                                                     error.details())
        assert f"already has an active rollout {won[0]}" in (error.details() or "")
    return won[0], refused


def assert_only_active(coordinator: Coordinator, service: RolloutService, rollout_id: str
                       ) -> None:
    active = [r.rollout_id for r, _ in service.records.history(*UNIT) if r.active]
    assert active == [rollout_id]
    key = coordinator.state.active_rollouts.get(UNIT)
    assert key is not None and key.value.rollout_id == rollout_id


async def abort_and_wait(admin: Any, service: RolloutService, rollout_id: str) -> None:
    await admin.ControlRollout(admin_pb2.ControlRolloutRequest(
        apartment="shop", unit="web", action=admin_pb2.ROLLOUT_CONTROL_ABORT))
    end = await async_eventually(lambda: ended(service, rollout_id), timeout=30)
    assert end.phase is Phase.ABORTED, end.failure


async def test_twenty_concurrent_deploys_leave_exactly_one_active_rollout(
    coordinator: Coordinator, admin: Any, fleet: Agents
) -> None:
    service = coordinator.rollouts  # the one behind the admin API
    winner, _ = await deploy_at_once(admin)
    assert_only_active(coordinator, service, winner)

    await abort_and_wait(admin, service, winner)
    assert UNIT not in coordinator.state.active_rollouts, "released with the ended record"
    again = await admin.Deploy(slow_canary())
    assert_only_active(coordinator, service, again.rollout.rollout_id)
    await abort_and_wait(admin, service, again.rollout.rollout_id)


async def _leading(c: Coordinator) -> bool:
    return c.leadership.is_leader


async def test_a_leader_change_mid_rollout_keeps_exactly_one(
    etcd: EtcdProcess, prefix: str
) -> None:
    first = Coordinator(coordinator_config(etcd, prefix, name="c1"))
    second = Coordinator(coordinator_config(etcd, prefix, name="c2"))
    await first.start()
    await async_eventually(lambda: _leading(first), timeout=10)
    await second.start()
    addresses = (first.config.listen, second.config.listen)
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    admins = [admin_pb2_grpc.AdminStub(c) for c in channels]
    streams = [_agent(n, addresses) for n in (2, 3, 4)]
    try:
        await async_eventually(lambda: _placeable(first, 3), timeout=10)
        await publish(admins[0], "1.0.0", "one")
        initial = await admins[0].Deploy(admin_pb2.DeployRequest(
            apartment="shop", unit="web", version="1.0.0", replicas=2))
        done = await async_eventually(
            lambda: ended(first.rollouts, initial.rollout.rollout_id), timeout=30)
        assert done.phase is Phase.PROMOTED, done.failure
        await publish(admins[0], "1.1.0", "two")
        active = (await admins[0].Deploy(slow_canary())).rollout.rollout_id

        async def switching() -> bool:
            return first.rollouts.get(*UNIT, active).phase is Phase.SWITCHING

        await async_eventually(switching, timeout=15)
        await first.stop()  # the leader goes mid-step; the follower takes over
        await async_eventually(lambda: _leading(second), timeout=10)
        await async_eventually(lambda: _runs(second.rollouts, active), timeout=10)
        await async_eventually(lambda: _placeable(second, 3), timeout=10)  # hosts came over

        assert_only_active(second, second.rollouts, active)
        results = await asyncio.gather(*(admins[1].Deploy(slow_canary()) for _ in range(20)),
                                       return_exceptions=True)
        assert all(isinstance(r, grpc.aio.AioRpcError)
                   and r.code() == grpc.StatusCode.FAILED_PRECONDITION
                   and active in (r.details() or "") for r in results), results
        assert_only_active(second, second.rollouts, active)

        await abort_and_wait(admins[1], second.rollouts, active)
        winner, _ = await deploy_at_once(admins[1])
        assert_only_active(second, second.rollouts, winner)
        await abort_and_wait(admins[1], second.rollouts, winner)
    finally:
        for task in streams:
            task.cancel()
        for task in streams:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in channels:
            await channel.close()
        await first.stop()
        await second.stop()
        cleanup = EtcdStore([etcd.endpoint])
        await cleanup.delete_prefix(prefix + "/")
        await cleanup.close()


async def test_a_new_leader_reduces_an_older_releases_double_rollout_to_one(
    coordinator: Coordinator, admin: Any, fleet: Agents
) -> None:
    # What 20 racing Deploys left behind before this release: two active rollouts of one
    # unit, written without an active-rollout key, and the unit deploying.
    settings = RolloutSettings(strategy=Strategy.BLUE_GREEN, replicas=2,
                               manual_promotion=True)
    older, newer = (
        replace(new_rollout(rid, "shop", "web", "default", "1.0.0", "1.1.0", settings, at,
                            new_slot="green"), phase=Phase.AWAITING_PROMOTION, seq=3)
        for rid, at in (("r-older", 1000.0), ("r-newer", 1001.0))
    )
    unit = coordinator.state.units[UNIT].value
    txn = Txn().put(coordinator.layout.unit(*UNIT), encode(replace(unit, state="deploying")))
    for record in (older, newer):
        txn.put(coordinator.layout.rollout("shop", "web", record.rollout_id),
                encode_record(record))
    await coordinator.view.wait_for(await coordinator.store.commit(txn))
    assert UNIT not in coordinator.state.active_rollouts

    successor = coordinator.rollout_service(RunnerSettings(0.05, 0.2))  # a new leader
    task = asyncio.create_task(successor.lead())
    try:
        await async_eventually(lambda: _runs(successor, "r-older"), timeout=10)
        assert_only_active(coordinator, successor, "r-older")
        superseded: RolloutRecord = successor.get("shop", "web", "r-newer")
        assert superseded.phase is Phase.FAILED and "r-older" in superseded.reason
        assert "r-newer" not in successor.runners
        failures = [e for e in successor.state.event_history()
                    if e.type == "rollout.failed" and e.details.get("rollout_id") == "r-newer"]
        assert failures and "r-older" in failures[0].message

        refused = await _refusal(admin)
        assert "already has an active rollout r-older" in refused
        await successor.control_rollout("shop", "web", Control.ABORT)
        end = await async_eventually(lambda: ended(successor, "r-older"), timeout=30)
        assert end.phase is Phase.ABORTED
        assert UNIT not in coordinator.state.active_rollouts
        record = await coordinator.rollouts.deploy(deploy_from_pb(slow_canary()))
        assert_only_active(coordinator, coordinator.rollouts, record.rollout_id)
        await coordinator.rollouts.control_rollout("shop", "web", Control.ABORT)
        await async_eventually(lambda: ended(coordinator.rollouts, record.rollout_id),
                               timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _refusal(admin: Any) -> str:
    try:
        await admin.Deploy(slow_canary())
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        return error.details() or ""
    raise AssertionError("the Deploy was accepted")


async def _runs(service: RolloutService, rollout_id: str) -> bool:
    return rollout_id in service.runners


async def _placeable(c: Coordinator, count: int) -> bool:
    return len(c.known.placeable_hosts("default")) == count


def _agent(n: int, addresses: tuple[str, ...]) -> asyncio.Task[None]:
    identity = Registration(f"h{n}", "default", f"127.0.0.{n}",
                            Resources(cpu=4.0, memory=8 << 30), {}, ("cpu", "memory"), "test")
    stream = CoordinatorStream(TrafficRuntime(identity, {}),
                               StreamSettings(addresses, backoff_initial=0.05,
                                              backoff_max=0.3))
    return asyncio.create_task(stream.run())
