"""The coordinator's web view (coordinator/web/pages.py) without a socket: its JSON is the
CLI's JSON of the rollout status, its files are the package's, and every other path or
method is refused the way the metrics endpoint refuses it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from rollout_sim import make_record

from common.errors import NotFound
from common.latency import LatencySketch
from common.metrics_http import MetricsEndpoint, MetricsServer
from common.stream_messages import MetricsWindow
from coordinator.api.rollout_proto import rollout_info
from coordinator.cli.output import to_json_dict
from coordinator.rollouts.record import Phase, RolloutRecord, StepRecord
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.rollouts.status import RolloutStatus, rollout_status
from coordinator.web.pages import WebView

T0 = 1_700_000_000.0
CANARY = RolloutSettings(strategy=Strategy.CANARY, replicas=1, steps=(20, 50, 100))


def _switching() -> RolloutRecord:
    record: RolloutRecord = make_record(CANARY, now=T0)
    return replace(record, phase=Phase.SWITCHING, new_percent=20.0, traffic_moved=True,
                   step_index=0, window_start=T0 + 10, steps=(StepRecord(0, 20, T0 + 10),))


def _window(host: str, version: str, requests: int) -> MetricsWindow:
    return MetricsWindow("acme", "shop", version, f"{host}-{version}", host, T0 + 11, T0 + 12,
                         requests, 0, LatencySketch.of([4.0] * requests))


WINDOWS = [_window("h1", "1.0.0", 80), _window("h1", "1.1.0", 20),
           _window("h2", "1.0.0", 78), _window("h2", "1.1.0", 22)]


class Reads:
    """The rollout service's two reads over fixed records and windows."""

    def __init__(self, records: dict[tuple[str, str], RolloutRecord]) -> None:
        self.records = records

    def get(self, apartment: str, unit: str, rollout_id: str = "") -> RolloutRecord:
        found = self.records.get((apartment, unit))
        if found is None:
            raise NotFound(f"no rollout of {apartment}/{unit}", unit=unit)
        return found

    def status(self, record: RolloutRecord) -> RolloutStatus:
        return rollout_status(record, WINDOWS, T0 + 14)


def _view() -> tuple[WebView, Reads]:
    reads = Reads({("acme", "shop"): _switching()})
    return WebView(reads, lambda: list(reads.records)), reads


async def _get(view: WebView, path: str) -> tuple[str, str, Any]:
    answer = await view(path)
    assert answer is not None, path
    status, content_type, body = answer
    return status, content_type, json.loads(body) if content_type == "application/json" else body


async def test_a_rollout_is_the_cli_json_of_its_status() -> None:
    view, reads = _view()
    status, content_type, body = await _get(view, "/api/v1/rollouts/acme/shop")
    assert (status, content_type) == ("200 OK", "application/json")
    record = reads.records[("acme", "shop")]
    assert body == to_json_dict(rollout_info(reads.status(record)))  # one JSON form
    hosts = {(w["host_id"], w["version"]): w for w in body["hosts"]}
    assert hosts[("h2", "1.1.0")]["measured_percent"] == pytest.approx(22.0)
    assert hosts[("h2", "1.1.0")]["target_percent"] == 20.0
    assert body["phase"] == "switching" and body["current_step"] == 0


async def test_the_list_holds_each_units_rollout_and_shows_a_rollback() -> None:
    view, reads = _view()
    back = replace(make_record(CANARY, rollout_id="r2", now=T0), unit="cart",
                   phase=Phase.ROLLED_BACK, ended_at=T0 + 60, reason="error rate too high")
    reads.records[("acme", "cart")] = back
    status, _, body = await _get(view, "/api/v1/rollouts")
    assert status == "200 OK"
    assert [(r["unit"], r["phase"]) for r in body["rollouts"]] == [
        ("cart", "rolled_back"), ("shop", "switching")]
    _, _, one = await _get(view, "/api/v1/rollouts/acme/cart")
    assert (one["phase"], one["reason"]) == ("rolled_back", "error rate too high")


@pytest.mark.parametrize(("path", "status"), [
    ("/api/v1/rollouts/acme/nope", "404 Not Found"),
    ("/api/v1/rollouts/acme", "404 Not Found"),
    ("/api/v1/rollouts/acme/shop/more", "404 Not Found"),
    ("/api/v1/rollouts/acme/%ff", "400 Bad Request"),
])
async def test_bad_paths_get_a_json_error(path: str, status: str) -> None:
    view, _ = _view()
    got, content_type, body = await _get(view, path)
    assert (got, content_type) == (status, "application/json")
    assert body["error"]


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=40))
async def test_any_path_under_the_api_answers_without_failing(rest: str) -> None:
    view, _ = _view()
    answer = await view("/api/v1/rollouts/" + rest)
    assert answer is not None and answer[0] in ("200 OK", "400 Bad Request", "404 Not Found")


async def test_the_page_and_its_files_come_from_the_package_only() -> None:
    view, _ = _view()
    pages = {path: await view(path) for path in ("/ui", "/ui/", "/ui/view.js", "/ui/view.css")}
    assert all(a is not None and a[0] == "200 OK" for a in pages.values())
    html = pages["/ui/"]
    assert html is not None and html[1].startswith("text/html") and html == pages["/ui"]
    refs = re.findall(rb'(?:src|href)="([^"]+)"', html[2])
    assert refs and all(r.startswith(b"/ui/") for r in refs), refs  # nothing from elsewhere
    assert await view("/ui/../pages.py") is None
    assert await view("/elsewhere") is None


async def test_through_the_endpoint_only_get_and_head_are_answered() -> None:
    view, _ = _view()
    server = MetricsServer(MetricsEndpoint("127.0.0.1:0"), CollectorRegistry(), pages=view)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        answer = await server.answer(f"{method} /api/v1/rollouts HTTP/1.1\r\n\r\n".encode())
        assert answer[0] == "405 Method Not Allowed"
    status, content_type, _ = await server.answer(b"GET /ui/?x=1 HTTP/1.1\r\n\r\n")
    assert (status, content_type) == ("200 OK", "text/html; charset=utf-8")
    assert (await server.answer(b"GET /nowhere HTTP/1.1\r\n\r\n"))[0] == "404 Not Found"
