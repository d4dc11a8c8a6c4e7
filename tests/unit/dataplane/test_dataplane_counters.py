"""Exact request counts from HAProxy's per-server counters: deltas, resets, windows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from agent.dataplane.haproxy_output import StatRow
from agent.dataplane.model import DataPlaneSpec, ServerSpec, UnitSpec
from agent.dataplane.request_counts import RequestCounts
from agent.dataplane.server_counters import (
    CounterDeltas,
    ServerCount,
    counter_delta,
    per_instance,
    row_count,
)
from agent.dataplane.windows import RequestWindows
from common.clock import FakeClock


def row(backend: str, server: str, requests: int, fivexx: int = 0, *, sid: int = 1,
        eresp: int = 0, econ: int = 0) -> StatRow:
    return StatRow(backend, server, 0, 0, "UP", 1, requests, "127.0.0.3:1", "L7OK",
                   sid=sid, hrsp_5xx=fivexx, eresp=eresp, econ=econ)


def test_a_request_and_an_error_in_counter_terms() -> None:
    # sent 100 (3 answered 5xx, 2 failed responses) + 4 whose connection failed for good
    assert row_count(row("be.web", "a", 100, 3, eresp=2, econ=4)) == ServerCount(104, 9)


def test_counter_delta_treats_a_drop_as_a_reset() -> None:
    assert counter_delta(None, 7) == 7
    assert counter_delta(5, 7) == 2
    assert counter_delta(9, 3) == 3


def test_first_reading_is_a_baseline_then_deltas_per_backend() -> None:
    deltas = CounterDeltas()
    assert deltas.update(100, [row("be.web", "a", 50, 1)]) == {}
    assert deltas.update(100, [row("be.web", "a", 50, 1)]) == {}
    got = deltas.update(100, [row("be.web", "a", 60, 2), row("pin0.web", "a", 5),
                              row("be.web", "b", 3)])
    assert got == {("be.web", "a"): ServerCount(10, 1), ("pin0.web", "a"): ServerCount(5, 0),
                   ("be.web", "b"): ServerCount(3, 0)}


def test_resets_count_the_whole_new_reading() -> None:
    deltas = CounterDeltas()
    deltas.update(100, [row("be.web", "a", 50), row("be.web", "b", 40)])
    # a reload: a new worker, counters from zero (even where they are higher than before)
    assert deltas.update(101, [row("be.web", "a", 70), row("be.web", "b", 2)]) == {
        ("be.web", "a"): ServerCount(70, 0), ("be.web", "b"): ServerCount(2, 0)}
    # b deleted and added again: a new sid
    assert deltas.update(101, [row("be.web", "a", 70), row("be.web", "b", 9, sid=7)]) == {
        ("be.web", "b"): ServerCount(9, 0)}
    # a counter that went down (a reset nothing else showed)
    assert deltas.update(101, [row("be.web", "a", 4), row("be.web", "b", 9, sid=7)]) == {
        ("be.web", "a"): ServerCount(4, 0)}


def test_per_instance_adds_a_servers_backends_and_skips_unknown_ones() -> None:
    deltas = {("be.web", "a"): ServerCount(10, 1), ("pin1.web", "a"): ServerCount(2, 2),
              ("be.gone", "x"): ServerCount(5, 0)}
    assert per_instance(deltas, {"be.web": "web", "pin1.web": "web"}) == {
        ("web", "a"): ServerCount(12, 3)}


_step = st.tuples(st.integers(0, 50), st.integers(0, 50),
                  st.sampled_from(["none", "none", "reload", "readd"]))


@given(st.lists(_step, min_size=1, max_size=40))
def test_deltas_never_go_negative_and_add_up_to_the_true_total(
        steps: Sequence[tuple[int, int, str]]) -> None:
    """HAProxy's counters over any sequence of requests, reloads and re-adds: the deltas
    after the baseline add up to exactly what happened after it."""
    deltas = CounterDeltas()
    worker, sid, requests, errors = 1, 1, 0, 0
    seen = ServerCount()
    true = ServerCount()
    for index, (more, failed, reset) in enumerate(steps):
        if reset == "reload":
            worker, requests, errors = worker + 1, 0, 0
        elif reset == "readd":
            sid, requests, errors = sid + 1, 0, 0
        failed = min(failed, more)
        requests, errors = requests + more, errors + failed
        got = deltas.update(worker, [row("be.web", "a", requests, errors, sid=sid),
                                     row("pin0.web", "a", requests, sid=sid)])
        if index == 0:
            assert got == {}
            continue
        true += ServerCount(2 * more, failed)
        for delta in got.values():
            assert delta.requests >= 0 and delta.errors >= 0
            seen += delta
    assert seen == true


class Admin:
    """Answers ``show info`` and ``show stat`` like HAProxy's admin socket."""

    def __init__(self) -> None:
        self.pid, self.dropped = 100, 0
        self.rows: list[StatRow] = []

    async def run(self, commands: Sequence[str]) -> list[str]:
        assert list(commands) == ["show info", "show stat -1 4 -1"]
        header = "# pxname,svname,sid,req_tot,hrsp_5xx,eresp,econ,type,"
        lines = [f"{r.backend},{r.server},{r.sid},{r.req_tot},{r.hrsp_5xx},{r.eresp},"
                 f"{r.econ},2," for r in self.rows]
        stat = "\n".join([header, *lines, "be.web,BACKEND,0,999,9,0,0,1,"])
        return [f"Name: HAProxy\nPid: {self.pid}\nDroppedLogs: {self.dropped}", stat]


async def test_request_counts_go_into_windows_under_each_servers_version() -> None:
    unit = UnitSpec("web", 8080).with_server(ServerSpec("a", "127.0.0.3", 1, "1.0.0", 50))
    unit = unit.with_server(ServerSpec("b", "127.0.0.4", 2, "1.1.0", 50))
    spec = DataPlaneSpec("127.0.0.2").with_unit(unit)
    clock, admin = FakeClock(), Admin()
    windows = RequestWindows(sample_every=20)
    counts = RequestCounts(admin, windows, lambda: spec, clock, 1.0, sample_every=20)
    admin.rows = [row("be.web", "a", 10), row("be.web", "b", 10)]
    admin.dropped = 3
    await counts.read()  # the baseline
    admin.rows = [row("be.web", "a", 110, 2), row("pin0.web", "b", 40, 4),
                  row("be.web", "b", 10)]
    admin.dropped = 5
    await counts.read()
    admin.pid, admin.dropped = 101, 1  # a reload
    admin.rows = [row("be.web", "a", 20, 1)]
    clock.advance(1.0)
    await counts.read()
    by_instance = {(w.version, w.instance): (w.requests, w.errors, w.sample_every)
                   for w in windows.snapshots("web", clock.now(), seconds=10)}
    assert by_instance == {("1.0.0", "a"): (120, 3, 20), ("1.1.0", "b"): (40, 4, 20)}
    assert counts.totals == {("web", "1.0.0"): ServerCount(120, 3),
                             ("web", "1.1.0"): ServerCount(40, 4)}
    assert counts.dropped_logs == 2 + 1
    assert counts.requests == 160 and counts.sampled_lines == 8


async def test_concurrent_reads_never_count_a_request_twice() -> None:
    """Readings are applied in the order they were taken (else an older one looks like a
    reset and its requests count again)."""
    unit = UnitSpec("web", 8080).with_server(ServerSpec("a", "127.0.0.3", 1, "1.0.0", 50))
    spec = DataPlaneSpec("127.0.0.2").with_unit(unit)

    class SlowFirst(Admin):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        async def run(self, commands: Sequence[str]) -> list[str]:
            self.calls += 1
            answer = await super().run(commands)
            if self.calls == 2:  # the second reading is taken, then held up
                self.rows = [row("be.web", "a", 30)]
                await asyncio.sleep(0.05)
            return answer

    admin, windows = SlowFirst(), RequestWindows()
    counts = RequestCounts(admin, windows, lambda: spec, FakeClock(), 1.0)
    admin.rows = [row("be.web", "a", 0)]
    await counts.read()
    admin.rows = [row("be.web", "a", 10)]
    await asyncio.gather(counts.read(), counts.read())
    assert counts.totals == {("web", "1.0.0"): ServerCount(30, 0)}
