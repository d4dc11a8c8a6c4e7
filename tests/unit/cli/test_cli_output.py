"""Output: JSON shape, tables, the rollout view and its criteria, exit codes, error lines."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import grpc
import pytest
from google.protobuf import timestamp_pb2
from rich.console import Console, RenderableType

from common.errors import InsufficientResources, InvalidArgument, InvalidVersion, NotFound
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.latency import LatencySketch
from common.rollout_policy import SuccessCriteria
from common.stream_messages import MetricsWindow
from coordinator.api.rollout_proto import rollout_info
from coordinator.cli.client import CallFailed, _failed
from coordinator.cli.exit_codes import (
    ExitCode,
    error_line,
    exit_code_for_error,
    exit_code_for_phase,
    is_terminal,
)
from coordinator.cli.output import enum_label, format_time, to_json_dict
from coordinator.cli.rollout_view import history_table, rollout_summary, rollout_view
from coordinator.cli.tables import (
    event_line,
    hosts_table,
    publish_view,
    resolve_tree,
    resources_text,
    unit_state_text,
    unit_view,
    units_table,
    versions_table,
)
from coordinator.rollouts.controls import new_rollout
from coordinator.rollouts.record import Measurement, Phase, RolloutRecord, StepRecord
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.rollouts.status import rollout_status

T0 = 1_700_000_000.0


def render(renderable: RenderableType) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(renderable)
    return buffer.getvalue()


def test_json_uses_proto_names_prints_defaults_and_numbers() -> None:
    response = admin_pb2.ListUnitsResponse(units=[types_pb2.UnitInfo(apartment="shop", unit="a")])
    data = to_json_dict(response)
    assert data == {
        "units": [
            {
                "apartment": "shop",
                "unit": "a",
                "state": "",
                "stable_version": "",
                "latest_version": "",
                "instances": 0,
                "building": "",
                "sticky": False,
                "failing_versions": {},
                "paused_instances": 0,
                "collected_instances": 0,
            }
        ]
    }
    host = to_json_dict(types_pb2.HostInfo(capacity=types_pb2.Resources(memory_bytes=2**40)))
    assert host["capacity"]["memory_bytes"] == 2**40
    assert host["enforceable"] == [] and host["labels"] == {}
    instance = to_json_dict(types_pb2.InstanceStatus(state=types_pb2.INSTANCE_STATE_RUNNING))
    assert instance["state"] == "INSTANCE_STATE_RUNNING"
    assert to_json_dict(admin_pb2.ListUnitsResponse()) == {"units": []}
    json.dumps(host)  # JSON-safe


def test_enum_labels_and_times() -> None:
    assert enum_label(types_pb2.Strategy, types_pb2.STRATEGY_BLUE_GREEN) == "blue-green"
    assert enum_label(types_pb2.Slot, types_pb2.SLOT_GREEN) == "green"
    assert enum_label(types_pb2.Strategy, 0) == "-"
    assert enum_label(types_pb2.Strategy, 42) == "? (42)"
    assert format_time(timestamp_pb2.Timestamp()) == "-"
    assert format_time(timestamp_pb2.Timestamp(seconds=1_700_000_000)) == "2023-11-14 22:13:20Z"


def test_resources_text() -> None:
    assert resources_text(types_pb2.Resources()) == "unlimited"
    text = resources_text(
        types_pb2.Resources(cpu_millis=1500, memory_bytes=256 * 2**20, network_bps=10**7)
    )
    assert text == "cpu 1500m, memory 256Mi, network 10Mbit"


def test_unit_and_version_tables() -> None:
    units = admin_pb2.ListUnitsResponse(
        units=[
            types_pb2.UnitInfo(
                apartment="shop", unit="cart", state="running", stable_version="1.0.0", instances=2
            )
        ]
    )
    assert "shop/cart" in render(units_table(units))
    some = types_pb2.UnitInfo(state="running", instances=3, paused_instances=1)
    assert unit_state_text(some) == "running (1 of 3 paused)"
    every = types_pb2.UnitInfo(state="running", instances=2, paused_instances=2)
    assert unit_state_text(every) == "running (paused)"
    idle = types_pb2.UnitInfo(state="running", instances=1, collected_instances=1)
    assert unit_state_text(idle) == "running (collected)"
    assert unit_state_text(types_pb2.UnitInfo(state="running", instances=1)) == "running"
    assert "running (paused)" in render(units_table(admin_pb2.ListUnitsResponse(units=[every])))
    assert render(units_table(admin_pb2.ListUnitsResponse())).strip() == "no units"
    spec = types_pb2.UnitSpec(image="img:1", dependencies=["db@^1"], env={"A": "1"})
    latest = types_pb2.VersionInfo(version="1.1.0", spec=spec, checksum="ab" * 32)
    shown = render(unit_view(admin_pb2.GetUnitResponse(unit=units.units[0], latest=latest)))
    for fragment in ("shop/cart", "1.1.0", "img:1", "db@^1", "env A", "unlimited"):
        assert fragment in shown
    versions = admin_pb2.ListVersionsResponse(
        versions=[
            types_pb2.VersionInfo(
                version="1.1.0",
                spec=spec,
                checksum="ab" * 32,
                changes=types_pb2.ChangeSet(features=["x"]),
            )
        ]
    )
    listed = render(versions_table(versions))
    assert "1.1.0" in listed and "abababababab" in listed and "1 features" in listed
    assert "local image" in shown


def test_versions_show_the_digest_publishing_resolved() -> None:
    digest = "sha256:" + "cd" * 32
    spec = types_pb2.UnitSpec(image="127.0.0.1:5000/shop/cart:1.1.0")
    version = types_pb2.VersionInfo(version="1.1.0", spec=spec, checksum="ab" * 32,
                                    image_digest=digest,
                                    image_id=f"127.0.0.1:5000/shop/cart@{digest}")
    listed = render(versions_table(admin_pb2.ListVersionsResponse(versions=[version])))
    assert "sha256:cdcdcdcdcdcd" in listed
    unit = types_pb2.UnitInfo(apartment="shop", unit="cart")
    shown = render(unit_view(admin_pb2.GetUnitResponse(unit=unit, latest=version)))
    assert "127.0.0.1:5000/shop/cart:1.1.0" in shown and digest in shown.replace("\n", "")
    published = render(publish_view(admin_pb2.PublishVersionResponse(version=version)))
    assert f"resolved to {digest}" in published.replace("\n", "")


def test_resolve_tree_nests_transitive_dependencies() -> None:
    resolved = [
        types_pb2.ResolvedDependency(
            unit="shop/db", range="^1", version="1.4.0", required_by="shop/cart@1.0.0"
        ),
        types_pb2.ResolvedDependency(
            unit="shop/disk", range="~2", version="2.0.1", required_by="shop/db@1.4.0"
        ),
    ]
    lines = render(resolve_tree("shop/cart@1.0.0", resolved)).splitlines()
    assert lines[0] == "shop/cart@1.0.0"
    db_line = next(i for i, line in enumerate(lines) if "shop/db@1.4.0" in line)
    disk_line = next(i for i, line in enumerate(lines) if "shop/disk@2.0.1" in line)
    assert disk_line > db_line
    indent = len(lines[disk_line]) - len(lines[disk_line].lstrip("│ └├─"))
    assert indent > len(lines[db_line]) - len(lines[db_line].lstrip("│ └├─"))
    assert "no dependencies" in render(resolve_tree("shop/cart@1.0.0", []))


def test_hosts_table_and_event_line() -> None:
    hosts = admin_pb2.ListHostsResponse(
        hosts=[
            types_pb2.HostInfo(
                host_id="h1",
                building="edge",
                address="127.0.0.2",
                status="alive",
                enforceable=["cpu", "memory"],
                capacity=types_pb2.Resources(cpu_millis=4000),
            )
        ]
    )
    shown = render(hosts_table(hosts))
    assert "h1" in shown and "alive" in shown and "cpu,memory" in shown and "0/4" in shown
    event = types_pb2.Event(
        sequence=7,
        type="version.created",
        apartment="shop",
        unit="cart",
        version="1.0.0",
        message="published",
        details={"k": "v"},
    )
    line = event_line(event).plain
    assert "#7" in line and "version.created" in line and "shop/cart@1.0.0" in line
    assert line.endswith("published  k=v")


def _record(phase: Phase = Phase.SWITCHING) -> RolloutRecord:
    settings = RolloutSettings(strategy=Strategy.CANARY, replicas=2, steps=(5, 25, 50, 100),
                               criteria=SuccessCriteria(max_latency_p95_ms=250.0,
                                                        min_requests=10))
    record = new_rollout("r-1", "shop", "cart", "edge", "1.0.0", "1.1.0", settings, T0)
    return replace(record, phase=phase, new_percent=5.0, traffic_moved=True,
                   window_start=T0 + 10, steps=(StepRecord(0, 5, T0 + 10),))


def _windows() -> list[MetricsWindow]:
    def w(host: str, version: str, requests: int, errors: int, ms: float) -> MetricsWindow:
        return MetricsWindow("shop", "cart", version, f"{host}-{version}", host, T0 + 11,
                             T0 + 12, requests, errors, LatencySketch.of([ms] * requests))

    return [w("h1", "1.0.0", 95, 0, 4.0), w("h2", "1.0.0", 95, 0, 4.0),
            w("h1", "1.1.0", 6, 0, 5.0), w("h2", "1.1.0", 4, 1, 5.0)]


def test_rollout_status_of_a_running_canary_shows_what_the_server_measured() -> None:
    info = rollout_info(rollout_status(_record(), _windows(), now=T0 + 20))
    shown = render(rollout_view(info))
    for fragment in (
        "1.0.0 -> 1.1.0", "switching", "1 of 4 (5%)",  # the step counter counts every step
        "measured: live since", "95.0%", "5.0%",  # the measured split
        "traffic by host", "94.1%", "4.0%", "25.00%",  # h2: 4 of 99 requests, 1 failed
        "5.0ms",  # canary p95, in the split, the step and the criteria
        "<= 250.0ms", "not set", ">= 10 requests",
    ):
        assert fragment in shown, fragment
    assert "no data" not in shown, "the criteria are measured on the judged figures"
    criteria = shown[shown.index("criteria"):]
    assert "latency p95" in criteria and "5.0ms" in criteria
    line = rollout_summary(info)
    assert line.startswith("shop/cart  1.0.0 -> 1.1.0  switching  step 1/4  split "), line
    assert "1.0.0 95%/95%" in line and "1.1.0 5%/5%" in line


def test_watch_lines_count_the_steps_of_the_whole_rollout() -> None:
    record = _record()
    lines = []
    for index, percent in enumerate((5, 25, 50, 100)):
        steps = tuple(StepRecord(i, p, T0 + i) for i, p in enumerate((5, 25, 50, 100)[:index + 1]))
        moved = replace(record, step_index=index, new_percent=float(percent), steps=steps)
        lines.append(rollout_summary(rollout_info(rollout_status(moved))))
    assert [line.split("  ")[3] for line in lines] == [
        "step 1/4", "step 2/4", "step 3/4", "step 4/4"]


def rollout(phase: str) -> types_pb2.RolloutInfo:
    stable = Measurement(requests=600, errors=0, duration_s=30.0, error_rate=0.0, p95_ms=20.0)
    failed = Measurement(requests=200, errors=40, duration_s=30.0, error_rate=0.2,
                         p95_ms=30.0)
    record = replace(
        _record(Phase(phase)), step_index=1, new_percent=0.0,
        steps=(StepRecord(0, 5, T0, "passed", T0 + 30,
                          Measurement(requests=120, p95_ms=20.0), stable),
               StepRecord(1, 25, T0 + 40, "failed", T0 + 70, failed, stable,
                          ("error rate 20.0% > max 1.0% over 200 requests",))),
        reason="error rate above threshold")
    return rollout_info(rollout_status(record))


def test_rollout_view_of_an_ended_rollout_shows_the_recorded_figures_and_hosts() -> None:
    info = rollout("rolled_back")
    instances = [
        types_pb2.InstanceStatus(
            instance_id="i-2",
            host_id="h2",
            apartment="shop",
            unit="cart",
            version="1.1.0",
            slot=types_pb2.SLOT_GREEN,
            state=types_pb2.INSTANCE_STATE_STOPPED,
        ),
        types_pb2.InstanceStatus(
            instance_id="i-1",
            host_id="h1",
            apartment="shop",
            unit="cart",
            version="1.0.0",
            slot=types_pb2.SLOT_BLUE,
            state=types_pb2.INSTANCE_STATE_RUNNING,
        ),
    ]
    shown = render(rollout_view(info, instances))
    for fragment in (
        "rolled_back",
        "2 of 4 (25%)",
        "as recorded in step 2",
        "75.0%",  # 600 stable of 800 requests in the failed step
        "25.0%",
        "error rate 20.0% > max 1.0% over 200 requests",
        "20.00%",
        "30.0ms",  # failed step's p95, and its stable p95 beside it
        "20.0ms",
        "fail",
        "instances by host",
    ):
        assert fragment in shown, fragment
    assert "traffic by host" not in shown, "recorded steps have no per-host figures"
    assert shown.index("i-1") < shown.index("i-2")
    assert rollout_summary(info).startswith("shop/cart  1.0.0 -> 1.1.0  rolled_back  step 2/4")


def test_history_table() -> None:
    shown = render(history_table(admin_pb2.ListRolloutsResponse(rollouts=[rollout("promoted")])))
    assert "r-1" in shown and "promoted" in shown and "canary" in shown
    assert "no rollouts" in render(history_table(admin_pb2.ListRolloutsResponse()))


@pytest.mark.parametrize(
    ("phase", "terminal", "code"),
    [
        ("promoted", True, ExitCode.OK),
        ("rolled_back", True, ExitCode.ROLLOUT_FAILED),
        ("failed", True, ExitCode.ROLLOUT_FAILED),
        ("aborted", True, ExitCode.ROLLOUT_FAILED),
        ("switching", False, ExitCode.OK),
        ("paused", False, ExitCode.OK),
    ],
)
def test_rollout_phase_exit_codes(phase: str, terminal: bool, code: ExitCode) -> None:
    assert is_terminal(phase) is terminal
    assert exit_code_for_phase(phase) == code


def test_error_exit_codes_and_lines() -> None:
    assert exit_code_for_error(InvalidArgument("--cpu: bad")) == ExitCode.USAGE
    assert exit_code_for_error(InvalidVersion("version: bad")) == ExitCode.USAGE
    assert exit_code_for_error(CallFailed("show shop/x", "NOT_FOUND", "no unit")) == 1
    assert exit_code_for_error(NotFound("x")) == ExitCode.ERROR
    assert exit_code_for_error(InsufficientResources("x")) == ExitCode.ERROR
    failed = CallFailed("show shop/x", "NOT_FOUND", "unit shop/x\nis not published")
    assert (
        error_line(failed)
        == "landlord: error: show shop/x: NOT_FOUND: unit shop/x is not published"
    )
    assert error_line(InvalidArgument("--cpu: 'x'  bad", field="--cpu")) == (
        "landlord: error: --cpu: 'x' bad"
    )


class _RefusedBySize(grpc.RpcError):  # type: ignore[misc]
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return "SERVER: Received message larger than max (30000005 vs. 4194304)"


def test_grpc_size_refusal_is_said_in_words() -> None:
    failed = _failed("publish shop/web 1.0.0", _RefusedBySize())
    assert failed.code == "RESOURCE_EXHAUSTED"
    assert error_line(failed) == ("landlord: error: publish shop/web 1.0.0: RESOURCE_EXHAUSTED: "
                                  "request too "
                                  "large: 30000005 bytes, limit 4 MiB")
