"""Recovery policy: retries, crash-loop backoff, escalation, leak detection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import FailedPrecondition, InvalidArgument
from common.recovery import (
    FailureKind,
    RecoveryAction,
    RecoveryPolicy,
    RecoveryState,
    RetryRule,
    assess_memory_trend,
    decide_after_crash,
    decide_after_failed_attempt,
    decide_after_failure,
    detect_memory_leak,
    record_healthy,
)

POLICY = RecoveryPolicy()


def test_crash_gets_three_retries_at_five_seconds_times_attempt() -> None:
    decision = decide_after_crash(POLICY, RecoveryState(), now=0.0)
    assert (decision.action, decision.delay_s, decision.attempt) == (RecoveryAction.RETRY, 0.0, 1)
    delays = []
    state = decision.state
    for _ in range(3):
        retry = decide_after_failed_attempt(POLICY, state, now=1.0)
        assert retry.action is RecoveryAction.RETRY
        delays.append(retry.delay_s)
        state = retry.state
    assert delays == [5.0, 10.0, 15.0]
    final = decide_after_failed_attempt(POLICY, state, now=2.0)
    assert final.action is RecoveryAction.ESCALATE and final.state.escalated
    assert "4 tries failed (max retries 3)" in final.reason
    with pytest.raises(FailedPrecondition, match="escalated"):
        decide_after_failed_attempt(POLICY, final.state, now=3.0)
    again = decide_after_crash(POLICY, final.state, now=4.0)  # a new incident starts afresh
    assert again.action is RecoveryAction.RETRY and not again.state.escalated


def test_memory_leak_gets_one_retry_without_delay() -> None:
    opened = decide_after_failure(POLICY, RecoveryState(), FailureKind.MEMORY_LEAK, 0.0)
    retry = decide_after_failed_attempt(POLICY, opened.state, 1.0)
    assert (retry.action, retry.delay_s, retry.attempt) == (RecoveryAction.RETRY, 0.0, 2)
    final = decide_after_failed_attempt(POLICY, retry.state, 2.0)
    assert final.action is RecoveryAction.ESCALATE


def test_policy_is_configurable() -> None:
    policy = RecoveryPolicy(crash=RetryRule(max_retries=1, delay_s=2.0))
    opened = decide_after_crash(policy, RecoveryState(), 0.0)
    assert decide_after_failed_attempt(policy, opened.state, 0.0).delay_s == 2.0
    with pytest.raises(InvalidArgument, match="max_retries"):
        RetryRule(max_retries=-1, delay_s=0)
    with pytest.raises(InvalidArgument, match="delay_s"):
        RetryRule(max_retries=1, delay_s=-1)
    with pytest.raises(InvalidArgument, match="max_incidents"):
        RecoveryPolicy(max_incidents=0)
    with pytest.raises(InvalidArgument, match="healthy_reset_s"):
        RecoveryPolicy(healthy_reset_s=float("inf"))


def test_a_failed_attempt_needs_an_open_incident() -> None:
    with pytest.raises(FailedPrecondition, match="no recovery incident"):
        decide_after_failed_attempt(POLICY, RecoveryState(), 0.0)


def crash_loop(policy: RecoveryPolicy, crashes: int, gap_s: float) -> list[float | None]:
    """Crash, recover at once, stay healthy ``gap_s``, crash again; the first-try delays."""
    state, now, delays = RecoveryState(), 0.0, []
    for _ in range(crashes):
        decision = decide_after_crash(policy, state, now)
        delays.append(decision.delay_s if decision.action is RecoveryAction.RETRY else None)
        state = record_healthy(policy, decision.state, now)
        now += gap_s
        state = record_healthy(policy, state, now)
    return delays


def test_crash_loop_backs_off_exponentially_with_a_cap_then_escalates() -> None:
    policy = RecoveryPolicy(loop_backoff_s=10, loop_backoff_cap_s=60, max_incidents=6)
    assert crash_loop(policy, 7, gap_s=5) == [0.0, 10.0, 20.0, 40.0, 60.0, 60.0, None]


def test_a_healthy_stretch_resets_the_crash_loop() -> None:
    policy = RecoveryPolicy(healthy_reset_s=600)
    assert crash_loop(policy, 4, gap_s=600) == [0.0, 0.0, 0.0, 0.0]
    assert crash_loop(policy, 3, gap_s=599) == [0.0, 10.0, 20.0]


def test_retries_within_a_loop_wait_at_least_the_loop_backoff() -> None:
    state = RecoveryState(incidents=3, kind=FailureKind.CONTAINER_CRASH)
    assert decide_after_failed_attempt(POLICY, state, 0.0).delay_s == 20.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["crash", "leak", "fail", "healthy"]), max_size=40))
def test_decisions_stay_within_policy(events: list[str]) -> None:
    state, now = RecoveryState(), 0.0
    for event in events:
        now += 1
        if event == "healthy":
            state = record_healthy(POLICY, state, now)
            continue
        if event == "fail" and (state.kind is None or state.escalated):
            with pytest.raises(FailedPrecondition):
                decide_after_failed_attempt(POLICY, state, now)
            continue
        if event == "fail":
            decision = decide_after_failed_attempt(POLICY, state, now)
        else:
            kind = FailureKind.CONTAINER_CRASH if event == "crash" else FailureKind.MEMORY_LEAK
            decision = decide_after_failure(POLICY, state, kind, now)
        assert 0 <= decision.delay_s <= max(POLICY.loop_backoff_cap_s, 15.0)
        assert decision.attempt <= POLICY.rule(decision.state.kind).max_retries + 2  # type: ignore[arg-type]
        state = decision.state


def ramp(n: int, step_s: float, start: int, per_step: int) -> list[tuple[float, int]]:
    return [(i * step_s, start + i * per_step) for i in range(n)]


def test_a_steady_rise_is_a_leak() -> None:
    samples = ramp(30, 30.0, 200 << 20, 2 << 20)  # +2 MiB every 30 s for 15 min
    assessment = assess_memory_trend(samples)
    assert assessment.leaking and assessment.rising_fraction == 1.0
    assert assessment.slope_bytes_per_s == pytest.approx((2 << 20) / 30)
    assert detect_memory_leak(samples)


def test_a_noisy_rise_is_still_a_leak() -> None:
    samples = [
        (i * 30.0, (200 << 20) + i * (2 << 20) + (-(1 << 19) if i % 5 == 0 else 0))
        for i in range(30)
    ]
    assert detect_memory_leak(samples)


def test_one_spike_is_not_a_leak() -> None:
    flat = [(i * 30.0, 200 << 20) for i in range(30)]
    spike = [*flat[:15], *[(t, b + (300 << 20)) for t, b in flat[15:]]]
    assert not detect_memory_leak(spike)
    single = [*flat[:29], (flat[29][0], 900 << 20)]
    assert not detect_memory_leak(single)


def test_flat_falling_or_short_series_are_not_leaks() -> None:
    assert not detect_memory_leak([(i * 30.0, 200 << 20) for i in range(30)])
    assert not detect_memory_leak(ramp(30, 30.0, 900 << 20, -(2 << 20)))
    short = assess_memory_trend(ramp(30, 1.0, 100, 1 << 20))  # 29 s span
    assert not short.leaking and "over 300 s" in short.reason
    assert not detect_memory_leak(ramp(3, 300.0, 100, 1 << 20))
    assert not detect_memory_leak([])
    # growth too small to matter: +1 KiB per sample on 1 GiB
    assert not detect_memory_leak(ramp(30, 30.0, 1 << 30, 1024))


def test_samples_out_of_order_are_sorted() -> None:
    samples = ramp(30, 30.0, 200 << 20, 2 << 20)
    assert detect_memory_leak(list(reversed(samples)))


def test_bad_samples_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="timestamp seconds, bytes"):
        detect_memory_leak([(0.0, "1G")])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument):
        detect_memory_leak([(0.0, 1, 2)])  # type: ignore[list-item]
    same_time = [(5.0, i) for i in range(10)]
    assert not detect_memory_leak(same_time, min_span_s=0)
