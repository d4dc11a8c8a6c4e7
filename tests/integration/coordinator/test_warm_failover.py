"""An agent moves to a new leader over the connection it already had to it (agent/stream/
channels.py), with the Register the follower held until it led (agent/stream/session.py)."""

from __future__ import annotations

import grpc
from local_cluster.etcd import EtcdProcess

from coordinator.app import Coordinator
from tests.integration.coordinator.agents import start_agent
from tests.integration.coordinator.conftest import coordinator_config
from tests.integration.coordinator.test_coord_stream import check
from tests.support import async_eventually


async def test_the_agent_reaches_the_new_leader_on_the_channel_it_kept_warm(
        coordinator: Coordinator, etcd: EtcdProcess, prefix: str) -> None:
    follower = Coordinator(coordinator_config(etcd, prefix, name="c2"))
    await follower.start()
    leader, standby = coordinator.config.listen, follower.config.listen
    agent = start_agent([leader, standby], "h1", "127.0.0.2")
    try:
        await async_eventually(check(lambda: agent.stream.coordinator_id == "c1"), timeout=10)
        channels = agent.stream.channels
        await async_eventually(check(lambda: standby in channels._channels), timeout=5)
        warm = channels._channels[standby]
        await async_eventually(check(
            lambda: warm.get_state() == grpc.ChannelConnectivity.READY), timeout=10)

        await coordinator.stop()  # resigns: c2 is elected and answers the held Register
        await async_eventually(check(lambda: agent.stream.coordinator_id == "c2"
                                     and agent.stream.connected.is_set()), timeout=15)
        assert channels._channels[standby] is warm  # no new connection was made
        assert agent.stream.target == standby
        assert agent.stream.sessions == 2
        assert agent.stream.unreachable_leader == ""
    finally:
        await agent.stop()
        await follower.stop()
