"""Output: JSON shape, tables, the rollout view and its criteria, exit codes, error lines."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from rich.console import Console, RenderableType

from common.errors import InsufficientResources, InvalidArgument, InvalidVersion, NotFound
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.latency import LatencySketch
from coordinator.cli.client import CallFailed
from coordinator.cli.exit_codes import (
    ExitCode,
    error_line,
    exit_code_for_error,
    exit_code_for_phase,
    is_terminal,
)
from coordinator.cli.output import enum_label, format_time, to_json_dict
from coordinator.cli.rollout_view import (
    check_criteria,
    history_table,
    judged_window,
    latency_p95_ms,
    rollout_summary,
    rollout_view,
)
from coordinator.cli.tables import (
    event_line,
    hosts_table,
    resolve_tree,
    resources_text,
    unit_view,
    units_table,
    versions_table,
)


def render(renderable: RenderableType) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(renderable)
    return buffer.getvalue()


def summary_of(values: list[float]) -> types_pb2.LatencySummary:
    """The wire form of a sketch of ``values``, as the coordinator would send it."""
    sketch = LatencySketch.of(values)
    data = sketch.to_dict()
    keys, key = [], 0
    for delta in data["k"]:  # type: ignore[attr-defined]
        key += delta
        keys.append(key)
    return types_pb2.LatencySummary(
        relative_accuracy=sketch.relative_accuracy,
        positive_buckets=dict(zip(keys, data["c"], strict=True)),  # type: ignore[call-overload]
        zero_count=int(data["z"]),  # type: ignore[call-overload]
        count=sketch.count,
        sum_ms=sketch.sum,
        min_ms=sketch.min or 0.0,
        max_ms=sketch.max or 0.0,
    )


def window(requests: int, errors: int, latencies: list[float], seconds: int = 30):  # type: ignore[no-untyped-def]
    return types_pb2.MetricsWindow(
        version="1.1.0",
        start=timestamp_pb2.Timestamp(seconds=1_700_000_000),
        end=timestamp_pb2.Timestamp(seconds=1_700_000_000 + seconds),
        requests=requests,
        errors=errors,
        latency=summary_of(latencies),
    )


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


def test_latency_p95_from_the_wire_summary() -> None:
    values = [float(v) for v in range(1, 101)]
    p95 = latency_p95_ms(summary_of(values))
    assert p95 is not None and abs(p95 - 95.0) <= 0.02 * 95
    assert latency_p95_ms(types_pb2.LatencySummary()) is None


def test_criteria_against_a_window() -> None:
    criteria = types_pb2.SuccessCriteria(
        max_error_rate=0.01,
        max_latency_p95=duration_pb2.Duration(nanos=250_000_000),
        min_throughput_rps=5,
        min_requests=100,
    )
    good = check_criteria(criteria, window(300, 1, [10.0] * 300))
    assert [c.verdict for c in good] == ["pass", "pass", "pass", "pass"]
    assert good[0].measured == "0.33%" and good[2].measured == "10.0 rps"
    bad = check_criteria(criteria, window(60, 6, [400.0] * 60))
    assert [c.verdict for c in bad] == ["fail", "fail", "fail", "no data"]
    empty = check_criteria(criteria, None)
    assert {c.verdict for c in empty} == {"no data"}
    unset = check_criteria(types_pb2.SuccessCriteria(), window(10, 0, [5.0] * 10))
    assert [c.verdict for c in unset] == ["pass", "not set", "not set", "not set"]


def rollout(phase: str) -> types_pb2.RolloutInfo:
    return types_pb2.RolloutInfo(
        rollout_id="r-1",
        apartment="shop",
        unit="cart",
        from_version="1.0.0",
        to_version="1.1.0",
        building="edge",
        strategy=types_pb2.STRATEGY_CANARY,
        phase=phase,
        current_step=1,
        replicas=2,
        steps=[
            types_pb2.RolloutStep(
                index=0, target_percent=5, outcome="passed", canary=window(120, 0, [20.0] * 120)
            ),
            types_pb2.RolloutStep(
                index=1,
                target_percent=25,
                outcome="failed",
                canary=window(200, 40, [30.0] * 200),
                reasons=["error rate 20.00% > 1.00%"],
            ),
        ],
        split=[
            types_pb2.WeightSplit(version="1.0.0", target_percent=75, measured_percent=74.2),
            types_pb2.WeightSplit(version="1.1.0", target_percent=25, measured_percent=25.8),
        ],
        criteria=types_pb2.SuccessCriteria(max_error_rate=0.01, min_requests=100),
        reason="error rate above threshold",
    )


def test_rollout_view_shows_split_steps_criteria_and_hosts() -> None:
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
        "1.0.0 -> 1.1.0",
        "rolled_back",
        "step",
        "2 of 2 (25%)",
        "74.2%",
        "25.8%",
        "error rate 20.00% > 1.00%",
        "20.00%",
        "fail",
        "instances by host",
    ):
        assert fragment in shown, fragment
    assert shown.index("h1") < shown.index("h2")
    assert judged_window(info) == info.steps[1].canary
    line = rollout_summary(info)
    assert line.startswith("shop/cart  1.0.0 -> 1.1.0  rolled_back  step 2/2")
    assert "1.1.0 25%/26%" in line


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
