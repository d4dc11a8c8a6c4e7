"""Stream schema numbers: who works with whom during a rolling upgrade."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.stream.session import CoordinatorStream, Disconnected, StreamSettings
from common.errors import FailedPrecondition
from common.gen.landlord.v1 import agent_pb2
from common.resources import Resources
from common.schema import (
    STREAM_SCHEMA,
    STREAM_SCHEMA_OLDEST,
    UNVERSIONED,
    check_stream_peer,
    peer_schema,
)
from common.stream_convert import registration_from_pb, registration_to_pb
from common.stream_messages import Registration
from tests.e2e.simulated_agent import FakeRuntime


def test_a_peer_that_sends_no_schema_is_release_0_1_0() -> None:
    assert peer_schema(0) == UNVERSIONED == 1
    assert peer_schema(5) == 5


def test_this_release_works_with_the_previous_one_both_ways() -> None:
    assert STREAM_SCHEMA_OLDEST == STREAM_SCHEMA - 1
    for peer in (STREAM_SCHEMA_OLDEST, STREAM_SCHEMA, STREAM_SCHEMA + 1):
        check_stream_peer(peer, peer_role="agent", role="coordinator")
    # a 0.1.0 agent (no schema sent) against this coordinator, and the reverse
    check_stream_peer(peer_schema(0), peer_role="agent", role="coordinator")
    check_stream_peer(peer_schema(0), peer_role="coordinator", role="agent")


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=1, max_value=50))
def test_peers_work_together_exactly_when_at_most_one_schema_apart(a: int, b: int) -> None:
    def works(peer: int, mine: int) -> bool:
        try:
            check_stream_peer(peer, peer_role="agent", role="coordinator", mine=mine,
                              oldest=mine - 1)
        except FailedPrecondition:
            return False
        return True

    assert works(a, b) == works(b, a) == (abs(a - b) <= 1)


def test_a_peer_two_releases_apart_is_refused_naming_both_schemas() -> None:
    with pytest.raises(FailedPrecondition) as old:
        check_stream_peer(1, peer_role="agent", role="coordinator", mine=3, oldest=2)
    assert old.value.code == "FAILED_PRECONDITION"
    assert "agent stream schema 1" in str(old.value) and "schema 3" in str(old.value)
    assert "upgrade the agent" in str(old.value)
    with pytest.raises(FailedPrecondition) as new:
        check_stream_peer(STREAM_SCHEMA + 2, peer_role="agent", role="coordinator",
                          peer_release="9.0.0")
    assert f"schema {STREAM_SCHEMA + 2}" in str(new.value)
    assert "(release 9.0.0)" in str(new.value) and "upgrade the coordinator" in str(new.value)


def test_register_carries_the_schema_and_an_old_register_reads_as_schema_1() -> None:
    reg = Registration("h1", "demo", "127.0.0.2", Resources(cpu=1, memory=1 << 30))
    assert reg.schema == STREAM_SCHEMA
    assert registration_to_pb(reg).schema == STREAM_SCHEMA
    old = agent_pb2.Register(host_id="h1", building="demo", address="127.0.0.2",
                             capacity=registration_to_pb(reg).capacity, agent_version="0.1.0")
    assert registration_from_pb(old).schema == 1


def test_an_agent_leaves_a_coordinator_two_schemas_ahead_and_stays_with_one_of_0_1_0() -> None:
    identity = Registration("h1", "demo", "127.0.0.2", Resources(cpu=1, memory=1 << 30))
    stream = CoordinatorStream(FakeRuntime(identity), StreamSettings(("127.0.0.1:1",)))
    with pytest.raises(Disconnected, match=f"coordinator speaks agent stream schema "
                                           f"{STREAM_SCHEMA + 2}"):
        stream._registered(agent_pb2.Registered(coordinator_id="c9", schema=STREAM_SCHEMA + 2))
    assert not stream.connected.is_set()
    stream._registered(agent_pb2.Registered(coordinator_id="c1"))  # 0.1.0 says no schema
    assert stream.connected.is_set() and stream.coordinator_id == "c1"
