"""Having lost the leader, the agent registers with every coordinator at once and keeps
the call that answers Registered (agent/stream/session.py ``_open_any``)."""

from __future__ import annotations

import asyncio

import pytest

from agent.stream.session import CoordinatorStream, Disconnected, Redirected, StreamSettings
from common.gen.landlord.v1 import agent_pb2
from common.resources import Resources
from common.stream_messages import Registration
from tests.e2e.simulated_agent import FakeRuntime

TARGETS = ("127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403")


class FakeCall:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def registered() -> agent_pb2.CoordinatorMessage:
    return agent_pb2.CoordinatorMessage(registered=agent_pb2.Registered(coordinator_id="c2"))


def not_leader(address: str) -> agent_pb2.CoordinatorMessage:
    return agent_pb2.CoordinatorMessage(not_leader=agent_pb2.NotLeader(leader_address=address))


def stream(answers: dict[str, tuple[float, agent_pb2.CoordinatorMessage | None]]
           ) -> tuple[CoordinatorStream, dict[str, FakeCall]]:
    """A stream whose ``_open(target)`` answers ``answers[target]`` after a delay (None:
    the coordinator is unreachable)."""
    s = CoordinatorStream(FakeRuntime(Registration(
        "h1", "default", "127.0.0.2", Resources(cpu=1, memory=1 << 30))), StreamSettings(TARGETS))
    s.unreachable_leader = TARGETS[0]
    calls: dict[str, FakeCall] = {}

    async def fake_open(target: str, register: agent_pb2.Register) -> tuple[FakeCall, object]:
        assert register.unreachable_leader == TARGETS[0]
        delay, answer = answers[target]
        await asyncio.sleep(delay)
        if answer is None:
            raise Disconnected(f"{target} refused")
        calls[target] = FakeCall()
        return calls[target], answer

    s._open = fake_open  # type: ignore[method-assign]
    return s, calls


def test_the_new_leader_answering_its_held_call_wins_and_the_others_are_cancelled() -> None:
    s, calls = stream({TARGETS[0]: (0.0, None),                      # the dead leader
                       TARGETS[1]: (0.01, not_leader(TARGETS[2])),  # the other follower
                       TARGETS[2]: (0.05, registered())})           # elected: answers
    target, call, first = asyncio.run(s._open_any())
    assert target == TARGETS[2] and call is calls[TARGETS[2]]
    assert first.WhichOneof("body") == "registered"
    assert calls[TARGETS[1]].cancelled and not call.cancelled


def test_a_slow_follower_is_cancelled_once_one_registered() -> None:
    s, calls = stream({TARGETS[0]: (0.0, registered()),  # only the stream broke: it leads
                       TARGETS[1]: (5.0, not_leader(TARGETS[0])),
                       TARGETS[2]: (5.0, not_leader(TARGETS[0]))})
    target, _, _ = asyncio.run(asyncio.wait_for(s._open_any(), 2))
    assert target == TARGETS[0]
    assert set(calls) == {TARGETS[0]}  # the held calls never got their answer


def test_a_leader_at_an_address_not_configured_is_followed_when_none_registered() -> None:
    elsewhere = "192.0.2.9:7400"
    s, _ = stream({TARGETS[0]: (0.0, None), TARGETS[1]: (0.0, not_leader(elsewhere)),
                   TARGETS[2]: (0.01, not_leader(elsewhere))})
    with pytest.raises(Redirected):
        asyncio.run(s._open_any())
    assert s._pick_target() == elsewhere


def test_no_coordinator_registering_is_a_failed_round() -> None:
    s, _ = stream(dict.fromkeys(TARGETS, (0.0, None)))
    with pytest.raises(Disconnected):
        asyncio.run(s._open_any())
