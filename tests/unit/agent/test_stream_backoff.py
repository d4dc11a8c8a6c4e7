"""The agent's reconnect waits: none after a redirect, a moment between the coordinators of
one round, exponential backoff only per round in which every coordinator failed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tenacity import RetryCallState

from agent.stream.session import (
    ROUND_STEP,
    CoordinatorStream,
    Disconnected,
    Redirected,
    StreamSettings,
)
from common.resources import Resources
from common.stream_messages import Registration
from tests.e2e.simulated_agent import FakeRuntime


def failed(error: Exception) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.set_exception((type(error), error, None))
    return state


def stream(coordinators: int) -> CoordinatorStream:
    addresses = tuple(f"127.0.0.1:{7400 + n}" for n in range(coordinators))
    return CoordinatorStream(endpoint=FakeRuntime(Registration(
        "h1", "default", "127.0.0.2", Resources(cpu=1, memory=1 << 30))),
                             settings=StreamSettings(addresses, backoff_initial=0.2,
                                                     backoff_max=5.0))


@given(st.integers(1, 5), st.lists(st.booleans(), max_size=40))
def test_waits_back_off_by_rounds_not_attempts(coordinators: int, redirects: list[bool]) -> None:
    wait = stream(coordinators)._wait_policy()
    failures = 0
    for redirected in redirects:
        if redirected:
            assert wait(failed(Redirected("127.0.0.1:7401"))) == 0.0
            continue
        failures += 1
        seconds = wait(failed(Disconnected("refused")))
        if failures % coordinators:
            assert 0.0 <= seconds <= ROUND_STEP  # the next coordinator of this round
        else:
            backoff = min(5.0, 0.2 * 2 ** (failures // coordinators - 1))
            assert backoff <= seconds <= backoff + 0.2


def test_a_lost_leader_is_named_in_the_next_register_until_one_registers() -> None:
    s = stream(3)
    s.target = s._pick_target()
    s._lost(s.target)
    assert s.unreachable_leader == ""  # a coordinator not known to lead is not named
    s._preferred = "127.0.0.1:7402"  # a follower's redirect
    s.target = s._pick_target()
    s._lost(s.target)
    assert s.unreachable_leader == "127.0.0.1:7402"
