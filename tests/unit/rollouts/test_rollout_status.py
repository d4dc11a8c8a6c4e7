"""The rollout-status read model: measured split, figures per version and host, criteria
checks and step count, filled from live windows (leader) or the step records (follower)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rollout_sim import make_record

from common.latency import LatencySketch
from common.rollout_policy import SuccessCriteria
from common.stream_messages import MetricsWindow
from coordinator.api.rollout_proto import rollout_info
from coordinator.rollouts.record import Measurement, Phase, RolloutRecord, StepRecord
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.rollouts.status import rollout_status

T0 = 1_700_000_000.0
CANARY = RolloutSettings(strategy=Strategy.CANARY, replicas=2, steps=(5, 25, 50, 100),
                         criteria=SuccessCriteria(max_error_rate=0.01, max_latency_p95_ms=200.0,
                                                  min_requests=50))


def _switching(percent: int = 5, index: int = 0) -> RolloutRecord:
    record: RolloutRecord = make_record(CANARY, now=T0)
    steps = tuple(StepRecord(i, p, T0 + i, outcome="passed", ended_at=T0 + i + 1)
                  for i, p in enumerate(CANARY.steps[:index]))
    return replace(record, phase=Phase.SWITCHING, new_percent=float(percent),
                   traffic_moved=True, step_index=index, window_start=T0 + 100,
                   steps=(*steps, StepRecord(index, percent, T0 + 100)))


def _window(host: str, version: str, start: float, requests: int, errors: int = 0,
            ms: float = 5.0) -> MetricsWindow:
    return MetricsWindow("acme", "shop", version, f"{host}-{version}", host, start, start + 1,
                         requests, errors, LatencySketch.of([ms] * requests))


def _live() -> list[MetricsWindow]:
    return [
        _window("h1", "1.0.0", T0 + 101, 190, ms=5.0),
        _window("h2", "1.0.0", T0 + 101, 190, ms=5.0),
        _window("h1", "1.1.0", T0 + 101, 12, ms=8.0),
        _window("h2", "1.1.0", T0 + 102, 8, errors=1, ms=8.0),
        _window("h1", "1.1.0", T0 + 50, 500, errors=400, ms=900.0),  # before the step
    ]


def test_a_running_canary_shows_the_measured_split_and_p95() -> None:
    status = rollout_status(_switching(), _live(), now=T0 + 110)
    assert status.total_steps == 4 and status.measured_live
    assert status.measured_since == T0 + 100
    split = {t.version: t for t in status.split}
    assert {v: t.target_percent for v, t in split.items()} == {"1.0.0": 95.0, "1.1.0": 5.0}
    assert split["1.1.0"].measured_percent == pytest.approx(5.0)
    assert split["1.0.0"].measured_percent == pytest.approx(95.0)
    canary = split["1.1.0"].figures
    assert canary is not None and (canary.requests, canary.errors) == (20, 1)
    assert canary.p95_ms == pytest.approx(8.0, rel=0.02)
    assert canary.throughput_rps == pytest.approx(2.0)


def test_per_host_figures_share_each_hosts_requests() -> None:
    status = rollout_status(_switching(), _live(), now=T0 + 110)
    hosts = {(t.host_id, t.version): t for t in status.hosts}
    assert sorted(hosts) == [("h1", "1.0.0"), ("h1", "1.1.0"), ("h2", "1.0.0"), ("h2", "1.1.0")]
    h2 = hosts[("h2", "1.1.0")]
    assert h2.target_percent == 5.0 and h2.figures is not None
    assert h2.measured_percent == pytest.approx(100 * 8 / 198, abs=0.01)
    assert h2.figures.error_rate == pytest.approx(1 / 8)


def test_criteria_are_checked_against_the_judged_figures() -> None:
    checks = {c.name: c for c in rollout_status(_switching(), _live(), now=T0 + 110).checks}
    assert checks["latency_p95_ms"].measured == pytest.approx(8.0, rel=0.02)
    assert checks["latency_p95_ms"].threshold == 200.0
    # 20 requests < the minimum of 50: nothing is judged yet
    assert [checks[n].verdict for n in ("error_rate", "latency_p95_ms", "requests")] == [
        "no data", "no data", "no data"]
    assert checks["throughput_rps"].verdict == "not set"
    assert checks["throughput_rps"].threshold is None

    busy = [_window("h1", "1.1.0", T0 + 101, 300, errors=9, ms=250.0)]
    checks = {c.name: c for c in rollout_status(_switching(), busy, now=T0 + 110).checks}
    assert checks["error_rate"].measured == pytest.approx(0.03)
    assert [checks[n].verdict for n in ("error_rate", "latency_p95_ms", "requests")] == [
        "fail", "fail", "pass"]


def test_a_follower_shows_the_figures_the_step_recorded() -> None:
    canary = Measurement(requests=100, errors=0, duration_s=30.0, error_rate=0.0, p95_ms=7.0,
                         throughput_rps=3.3)
    stable = Measurement(requests=300, errors=0, duration_s=30.0, error_rate=0.0, p95_ms=6.0)
    record = _switching(25, 1)
    record = record.with_step(replace(record.steps[0], canary=canary, stable=stable))
    status = rollout_status(record)  # no windows: a follower, or nothing reported yet
    assert not status.measured_live and status.measured_since == record.steps[0].started_at
    assert status.measured_step == 0
    split = {t.version: t for t in status.split}
    assert split["1.1.0"].measured_percent == 25.0 and split["1.1.0"].target_percent == 25.0
    assert split["1.0.0"].figures == stable and status.hosts == ()
    checks = {c.name: c for c in status.checks}
    assert checks["latency_p95_ms"].measured == 7.0 and checks["latency_p95_ms"].verdict == "pass"


def test_nothing_measured_leaves_every_figure_unset() -> None:
    status = rollout_status(_switching())
    assert status.measured_since is None and not status.measured_live
    assert [(t.version, t.measured_percent, t.figures) for t in status.split] == [
        ("1.0.0", None, None), ("1.1.0", None, None)]
    assert {c.verdict for c in status.checks} <= {"no data", "not set"}


def test_ended_and_unjudged_rollouts() -> None:
    first = make_record(RolloutSettings(strategy=Strategy.INITIAL), from_version="", now=T0)
    failed = replace(first, phase=Phase.FAILED, ended_at=T0 + 5)
    assert rollout_status(failed, _live(), T0 + 110).split == ()
    assert rollout_status(failed).total_steps == 1 and rollout_status(failed).checks == ()
    promoted = replace(first, phase=Phase.PROMOTED, new_percent=100.0, traffic_moved=True)
    assert [(t.version, t.target_percent) for t in rollout_status(promoted).split] == [
        ("1.1.0", 100.0)]
    blue_green = make_record(RolloutSettings(strategy=Strategy.BLUE_GREEN), now=T0)
    assert rollout_status(blue_green).checks == ()


def test_the_wire_form_carries_numbers_not_text() -> None:
    info = rollout_info(rollout_status(_switching(), _live(), now=T0 + 110))
    assert info.total_steps == 4 and info.measured_live
    assert info.measured_since.seconds == int(T0 + 100) and not info.HasField("measured_step")
    new = next(t for t in info.split if t.version == "1.1.0")
    assert new.measured_percent == pytest.approx(5.0) and new.p95_ms == pytest.approx(8.0, 0.02)
    assert len(info.hosts) == 4 and {h.host_id for h in info.hosts} == {"h1", "h2"}
    throughput = next(c for c in info.checks if c.name == "throughput_rps")
    assert not throughput.HasField("threshold") and throughput.verdict == "not set"
    nothing = rollout_info(rollout_status(_switching()))
    assert not nothing.HasField("measured_since")
    assert not any(t.HasField("measured_percent") for t in nothing.split)


def test_a_version_that_served_nothing_measures_zero_percent() -> None:
    only_stable = [_window("h1", "1.0.0", T0 + 101, 50)]
    split = {t.version: t for t in rollout_status(_switching(), only_stable, T0 + 110).split}
    assert split["1.1.0"].measured_percent == 0.0 and split["1.0.0"].measured_percent == 100.0
    assert split["1.1.0"].figures is not None and split["1.1.0"].figures.p95_ms is None


def test_sampled_latency_says_how_many_samples_and_the_ratio() -> None:
    sampled = [replace(_window("h1", "1.1.0", T0 + 101, 10, ms=8.0), requests=500,
                       sample_every=50),
               replace(_window("h2", "1.1.0", T0 + 101, 4, ms=9.0), requests=40)]
    status = rollout_status(_switching(), sampled, now=T0 + 110)
    canary = {t.version: t for t in status.split}["1.1.0"].figures
    assert canary is not None
    assert (canary.requests, canary.latency_samples, canary.sample_every) == (540, 14, 50)
    step = replace(StepRecord(0, 5, T0), canary=canary)
    record = replace(_switching(), steps=(step,))
    assert RolloutRecord.from_dict(record.to_dict()).steps[0].canary == canary
