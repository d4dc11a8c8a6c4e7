"""coordinator/api/call_limits.py: slots per identity, who a call counts against, and the
interceptor's refusals (per identity, large requests waiting for a turn, unary deadline),
driven through the handlers it returns with a recording context."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.transport import ConnectionLimits
from coordinator.api.call_limits import (
    LARGE_REQUEST_METHODS,
    CallLimitSettings,
    CallLimitsInterceptor,
    IdentitySlots,
    Turns,
    caller_key,
)

PUBLISH = next(iter(LARGE_REQUEST_METHODS))
LIST_HOSTS = "/landlord.v1.Admin/ListHosts"


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abc")), max_size=60),
       st.integers(1, 5))
def test_slots_never_exceed_the_cap_and_forget_idle_keys(ops: list[tuple[bool, str]],
                                                         cap: int) -> None:
    slots, model = IdentitySlots(cap), dict.fromkeys("abc", 0)
    for take, key in ops:
        if take:
            assert slots.take(key) == (model[key] < cap)
            model[key] = min(cap, model[key] + 1)
        elif model[key]:
            slots.give_back(key)
            model[key] -= 1
        assert slots.held(key) == model[key] <= cap
        assert len(slots) == sum(1 for held in model.values() if held)


def test_caller_key_is_the_landlord_uri_then_the_certificate_then_the_connection() -> None:
    san = {"x509_subject_alternative_name": [b"spiffe://x/y", b"landlord://viewer/bob"],
           "x509_pem_cert": [b"PEM"]}
    assert caller_key(san, "ipv4:127.0.0.1:5000") == "landlord://viewer/bob"
    assert caller_key({"x509_pem_cert": [b"PEM"]}, "p").startswith("certificate ")
    assert caller_key({}, "ipv4:127.0.0.1:5000") == "ipv4:127.0.0.1:5000"


def test_connection_limits_become_grpc_options() -> None:
    options = dict(ConnectionLimits(handshake_timeout_ms=1500, idle_timeout_ms=0,
                                    max_connections=10).server_options())
    assert options == {"grpc.server_handshake_timeout_ms": 1500,
                       "grpc.max_concurrent_streams": 100,
                       "grpc.max_allowed_incoming_connections": 10}


class Aborted(Exception):
    pass


class Context:
    def __init__(self, who: str) -> None:
        self.who = who
        self.status: tuple[grpc.StatusCode, str] | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_subject_alternative_name": [self.who.encode()]}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise Aborted(details)


async def one(request: Any) -> AsyncIterator[Any]:
    yield request


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def limited(interceptor: CallLimitsInterceptor, method: str, behavior: Any) -> Any:
    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(behavior)

    handler = await interceptor.intercept_service(continuation, Details(method))
    assert handler is not None and handler.stream_unary is not None  # decided before reading
    return handler.stream_unary


async def test_an_identity_over_its_cap_is_refused_and_another_is_served() -> None:
    interceptor = CallLimitsInterceptor(CallLimitSettings(per_identity=2))
    release = asyncio.Event()

    async def slow(request: str, context: Any) -> str:
        await release.wait()
        return request

    behavior = await limited(interceptor, LIST_HOSTS, slow)
    held = [asyncio.create_task(behavior(one("x"), Context("landlord://viewer/bob")))
            for _ in range(2)]
    await asyncio.sleep(0)
    bob = Context("landlord://viewer/bob")
    with pytest.raises(Aborted):
        await behavior(one("y"), bob)
    assert bob.status is not None and bob.status[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "landlord://viewer/bob" in bob.status[1]
    eve = asyncio.create_task(behavior(one("z"), Context("landlord://viewer/eve")))
    release.set()
    assert await eve == "z"
    assert await asyncio.gather(*held) == ["x", "x"]
    assert len(interceptor.slots) == 0


async def test_large_requests_wait_for_a_turn_then_are_refused_unread() -> None:
    interceptor = CallLimitsInterceptor(CallLimitSettings(large_in_flight=1, large_wait=0.05))
    release = asyncio.Event()
    read: list[str] = []

    async def publish(request: str, context: Any) -> str:
        await release.wait()
        return request

    async def tracked(request: str) -> AsyncIterator[str]:
        read.append(request)
        yield request

    behavior = await limited(interceptor, PUBLISH, publish)
    first = asyncio.create_task(behavior(tracked("first"), Context("landlord://admin/a")))
    await asyncio.sleep(0.01)
    second = Context("landlord://admin/b")
    with pytest.raises(Aborted):
        await behavior(tracked("second"), second)
    assert second.status is not None and second.status[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_publishes_in_flight" in second.status[1]
    assert read == ["first"]  # the refused request was never read
    release.set()
    assert await first == "first"
    third = asyncio.create_task(behavior(tracked("third"), Context("landlord://admin/b")))
    assert await third == "third"


async def test_a_unary_call_past_its_deadline_answers_deadline_exceeded() -> None:
    interceptor = CallLimitsInterceptor(CallLimitSettings(unary_deadline=0.05))

    async def stuck(request: str, context: Any) -> str:
        await asyncio.Event().wait()
        return request

    behavior = await limited(interceptor, LIST_HOSTS, stuck)
    context = Context("landlord://admin/a")
    with pytest.raises(Aborted):
        await behavior(one("x"), context)
    assert context.status is not None and context.status[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(interceptor.slots) == 0


async def test_one_key_holds_at_most_its_share_of_the_turns() -> None:
    turns, held = Turns(total=4, share=2), []

    async def hold(key: str, release: asyncio.Event) -> None:
        async with turns.turn(key):
            held.append(key)
            await release.wait()

    release = asyncio.Event()
    greedy = [asyncio.create_task(hold("greedy", release)) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert held == ["greedy", "greedy"]  # the other three wait in line
    other = asyncio.create_task(hold("other", release))
    await asyncio.sleep(0.01)
    assert held.count("other") == 1
    release.set()
    await asyncio.gather(*greedy, other)
    assert held.count("greedy") == 5 and len(turns) == 0


async def test_a_trickled_request_loses_its_turn_after_the_read_timeout() -> None:
    interceptor = CallLimitsInterceptor(CallLimitSettings(read_timeout=0.05))

    async def never(request: str, context: Any) -> str:
        raise AssertionError("no request arrived")

    async def trickled() -> AsyncIterator[str]:
        await asyncio.sleep(10)
        yield "late"

    behavior = await limited(interceptor, PUBLISH, never)
    context = Context("landlord://admin/a")
    with pytest.raises(Aborted):
        await behavior(trickled(), context)
    assert context.status is not None and context.status[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "request_read_timeout" in context.status[1]
    assert len(interceptor.slots) == 0 and len(interceptor.turns) == 0
