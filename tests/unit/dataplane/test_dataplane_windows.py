from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.dataplane.request_log import RequestRecord
from agent.dataplane.windows import RequestWindows, WindowSnapshot, merge_snapshots
from common.errors import InvalidArgument
from common.latency import LatencySketch

T0 = 1_700_000_000.0


def request(
    instance: str = "a",
    version: str = "1.0.0",
    status: int = 200,
    ms: float | None = 10.0,
    unit: str = "web",
) -> RequestRecord:
    return RequestRecord(unit, version, instance, f"be.{unit}", status, ms, "--", status >= 500)


def serve(windows: RequestWindows, record: RequestRecord, now: float) -> None:
    """One request as the data plane sees it: HAProxy counts it and logs its line."""
    windows.count(record.unit, record.version, record.instance, 1, int(record.error), now)
    windows.record(record, now)


def test_log_lines_give_latency_and_activity_counts_give_requests() -> None:
    windows = RequestWindows(sample_every=10)
    windows.count("web", "1.0.0", "a", 100, 3, T0)
    windows.record(request("a", ms=5.0), T0 + 0.5)  # one sampled line of those 100
    (a,) = windows.snapshots("web", T0 + 1.0)
    assert (a.requests, a.errors, a.latency.count, a.sample_every) == (100, 3, 1, 10)
    assert WindowSnapshot.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    windows.record(request("b", ms=1.0), T0 + 0.6)  # a line alone counts no request
    assert windows.last_activity("web", "b") == T0 + 0.6
    assert [s.requests for s in windows.snapshots("web", T0 + 1.0)] == [100, 0]
    with pytest.raises(InvalidArgument):
        RequestWindows(sample_every=0)


def test_counts_errors_and_latency_per_instance() -> None:
    windows = RequestWindows()
    for i in range(10):
        serve(windows, request("a", status=500 if i == 0 else 200, ms=float(i)), T0 + i * 0.1)
    serve(windows, request("b", version="1.1.0", ms=None), T0 + 0.5)
    a, b = windows.snapshots("web", T0 + 1.0)
    assert (a.instance, a.requests, a.errors, a.latency.count) == ("a", 10, 1, 10)
    assert a.error_rate == pytest.approx(0.1)
    assert (b.instance, b.version, b.requests, b.latency.count) == ("b", "1.1.0", 1, 0)
    assert [s.instance for s in windows.snapshots("web", T0 + 1, version="1.1.0")] == ["b"]
    assert windows.snapshots("api", T0 + 1) == []


def test_a_window_only_reaches_back_as_far_as_asked_give_or_take_a_bucket() -> None:
    windows = RequestWindows(bucket_s=1.0)
    serve(windows, request(), T0)
    serve(windows, request(), T0 + 30)
    serve(windows, request(), T0 + 59.5)
    (recent,) = windows.snapshots("web", T0 + 60, seconds=10)
    assert recent.requests == 1 and recent.start == T0 + 50 and recent.end == T0 + 60
    (all_of_it,) = windows.snapshots("web", T0 + 60, seconds=60)
    assert all_of_it.requests == 3
    with pytest.raises(InvalidArgument):
        windows.snapshots("web", T0, seconds=0)


def test_old_buckets_are_dropped_after_the_retention() -> None:
    windows = RequestWindows(bucket_s=1.0, retention_s=10.0)
    serve(windows, request("old"), T0)
    serve(windows, request("new"), T0 + 20)
    assert [s.instance for s in windows.snapshots("web", T0 + 20, seconds=1000)] == ["new"]


def test_last_activity_per_unit_and_instance() -> None:
    windows = RequestWindows()
    assert windows.last_activity("web") is None
    serve(windows, request("a"), T0)
    serve(windows, request("b"), T0 + 5)
    serve(windows, request("", version=""), T0 + 7)  # no server chosen: unit activity only
    assert windows.last_activity("web") == T0 + 7
    assert windows.last_activity("web", "a") == T0
    assert windows.last_activity("web", "b") == T0 + 5
    assert windows.last_activity("web", "c") is None


def test_snapshots_merge_across_hosts_and_round_trip_as_json() -> None:
    host1, host2 = RequestWindows(), RequestWindows()
    for ms in range(100):
        serve(host1, request("a", ms=float(ms), status=500 if ms < 5 else 200), T0)
        serve(host2, request("b", ms=float(ms + 100)), T0)
    snaps = host1.snapshots("web", T0, host="h1") + host2.snapshots("web", T0, host="h2")
    merged = merge_snapshots(snaps, version="1.0.0")
    assert merged is not None
    assert (merged.requests, merged.errors, merged.host, merged.instance) == (200, 5, "*", "*")
    exact = LatencySketch.of([float(ms) for ms in range(200)])
    assert merged.latency == exact
    p95 = merged.latency.quantile(0.95)
    assert p95 is not None and abs(p95 - 189) <= 189 * 0.01 + 1e-9
    for snap in snaps:
        assert WindowSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap
    assert merge_snapshots([]) is None
    with pytest.raises(InvalidArgument):
        WindowSnapshot.from_dict({"unit": "web"})


def test_completed_buckets_are_handed_over_once_and_the_filling_one_waits() -> None:
    windows = RequestWindows(bucket_s=1.0)
    serve(windows, request("a", ms=1.0), T0 + 0.2)
    serve(windows, request("a", ms=2.0), T0 + 1.5)
    serve(windows, request("b", version="1.1.0"), T0 + 1.7)
    assert windows.take_completed(T0 + 0.9) == []  # the only bucket still fills
    (first,) = windows.take_completed(T0 + 1.9, host="h1")
    assert (first.instance, first.requests, first.start, first.end, first.host) == (
        "a", 1, T0, T0 + 1.0, "h1")
    assert first.latency == LatencySketch.of([1.0])
    assert windows.take_completed(T0 + 1.95) == []  # nothing completed since
    serve(windows, request("a", status=503, ms=3.0), T0 + 2.1)
    a, b = windows.take_completed(T0 + 3.0)
    assert (a.instance, a.requests, a.errors, a.start, a.end) == ("a", 2, 1, T0 + 1, T0 + 3)
    assert a.latency == LatencySketch.of([2.0, 3.0])
    assert (b.instance, b.version, b.requests) == ("b", "1.1.0", 1)
    assert windows.snapshots("web", T0 + 3.0, seconds=10)  # sliding windows still read


def test_a_long_pause_hands_over_only_what_is_kept() -> None:
    windows = RequestWindows(bucket_s=1.0, retention_s=10.0)
    serve(windows, request("a"), T0)
    windows.take_completed(T0 + 1)
    serve(windows, request("a"), T0 + 100)
    (window,) = windows.take_completed(T0 + 105)
    assert (window.requests, window.start, window.end) == (1, T0 + 95, T0 + 105)


@given(st.lists(st.tuples(st.floats(0.0, 0.99), st.booleans()), max_size=60))
def test_every_request_is_handed_over_exactly_once(steps: list[tuple[float, bool]]) -> None:
    """Requests and takes interleaved at any moments: taken + still filling = recorded."""
    windows = RequestWindows(bucket_s=0.5)
    now, recorded, taken = T0, 0, 0
    for advance, take in steps:
        now += advance
        if take:
            taken += sum(w.requests for w in windows.take_completed(now))
        else:
            serve(windows, request(), now)
            recorded += 1
    taken += sum(w.requests for w in windows.take_completed(now))
    filling = sum(s.requests for s in windows.snapshots("web", now, seconds=1e-9))
    assert taken + filling == recorded
