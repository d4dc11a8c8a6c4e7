"""The one compare-and-swap retry: retried after each Conflict with a catch-up between
tries, at most CAS_ATTEMPTS times, then a Conflict naming what kept conflicting."""

from __future__ import annotations

import pytest

from common.errors import Conflict, InvalidArgument
from coordinator.state.fenced_writes import CAS_ATTEMPTS, retry_on_conflict


class Attempts:
    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.calls = 0
        self.caught_up: list[object] = []

    async def attempt(self) -> str:
        self.calls += 1
        if self.calls <= self.conflicts:
            raise Conflict("lost", revision=10 * self.calls)
        return "done"

    async def catch_up(self, conflict: Conflict) -> None:
        self.caught_up.append(conflict.context["revision"])


async def test_a_lost_compare_is_decided_again_after_catching_up() -> None:
    tries = Attempts(conflicts=2)
    assert await retry_on_conflict(tries.attempt, tries.catch_up, "placing shop/web") == "done"
    assert tries.calls == 3
    assert tries.caught_up == [10, 20]


async def test_exhausted_attempts_raise_a_conflict_that_says_what_and_how_often() -> None:
    tries = Attempts(conflicts=CAS_ATTEMPTS)
    with pytest.raises(Conflict, match=rf"placing shop/web kept conflicting .*"
                                       rf"\({CAS_ATTEMPTS} attempts\); retry") as raised:
        await retry_on_conflict(tries.attempt, tries.catch_up, "placing shop/web", unit="web")
    assert tries.calls == CAS_ATTEMPTS
    assert raised.value.context["unit"] == "web"
    assert raised.value.context["attempts"] == CAS_ATTEMPTS
    assert isinstance(raised.value.__cause__, Conflict)


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise InvalidArgument("no")

    async def never(conflict: Conflict) -> None:
        raise AssertionError("no catch-up without a conflict")

    with pytest.raises(InvalidArgument):
        await retry_on_conflict(refused, never, "anything")
    assert calls == 1


async def test_a_plain_callable_that_returns_an_awaitable_is_awaited_too() -> None:
    tries = Attempts(conflicts=1)
    assert await retry_on_conflict(lambda: tries.attempt(), tries.catch_up, "x") == "done"
    assert tries.calls == 2
