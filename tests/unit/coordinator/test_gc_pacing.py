"""GcPacing: freeze what lives, thaw once a period, time full collections."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from coordinator.gc_pacing import GcPacing


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_freezes_each_round_and_thaws_when_the_period_is_over() -> None:
    ticks = Ticks()
    pacing = GcPacing(freeze_every=1.0, thaw_every=10.0, clock=ticks)
    kept = [[i] for i in range(1000)]
    cycle = Cycle()
    gone = weakref.ref(cycle)
    try:
        assert pacing.step() == "frozen"
        assert gc.get_freeze_count() >= len(kept)
        del cycle  # garbage among frozen objects: only a thaw reclaims it
        gc.collect()
        assert gone() is not None
        ticks.now = 10.0
        assert pacing.step() == "thawed"  # collected and frozen again in the same step
        assert gone() is None and gc.get_freeze_count() >= len(kept)
        ticks.now = 11.0
        assert pacing.step() == "frozen"
    finally:
        gc.unfreeze()


def test_full_collections_are_timed_and_slow_ones_logged(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    ticks = Ticks()
    pacing = GcPacing(warn_ms=100.0, clock=ticks)
    pacing._on_gc("start", {"generation": 0})
    pacing._on_gc("stop", {"generation": 0})
    assert pacing.full_collections == 0
    pacing._on_gc("start", {"generation": 2})
    ticks.now = 0.25
    with caplog.at_level("WARNING"):
        pacing._on_gc("stop", {"generation": 2})
    assert pacing.full_collections == 1 and pacing.longest_ms == pytest.approx(250.0)
    assert "full garbage collection took 250 ms" in caplog.text


async def test_run_hooks_in_and_leaves_nothing_frozen_when_cancelled() -> None:
    pacing = GcPacing(freeze_every=0.01, thaw_every=60.0)
    task = asyncio.create_task(pacing.run())
    await asyncio.sleep(0.05)
    assert pacing._on_gc in gc.callbacks
    gc.collect()
    assert pacing.full_collections >= 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pacing._on_gc not in gc.callbacks and gc.get_freeze_count() == 0


def test_periods_must_make_sense() -> None:
    with pytest.raises(ValueError):
        GcPacing(freeze_every=10.0, thaw_every=5.0)
