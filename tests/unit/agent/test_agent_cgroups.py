"""cgroup v1 and v2 readings (recorded files), and the findings the monitor derives."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from agent.instances.events import EventType
from agent.instances.resource_monitor import EdgeFilter, Finding, evaluate
from agent.limits.cgroups import (
    CgroupPaths,
    cgroup_version,
    locate,
    parse_cpu_max,
    parse_psi_avg10,
    read_sample,
)

FIXTURES = Path(__file__).parent / "fixtures"
V2_ROOT = FIXTURES / "cgroup_v2"
V2_ID = "4f1c2a9e"


def _v1_paths() -> CgroupPaths:
    root = FIXTURES / "cgroup_v1"
    return CgroupPaths(1, {c: root / c for c in ("memory", "cpu", "cpuacct", "pids", "blkio")})


def test_v1_recorded_files() -> None:
    sample = read_sample(_v1_paths())
    assert sample.version == 1
    assert sample.memory_limit == sample.swap_limit == 134217728
    assert sample.memory_usage == 18292736
    assert sample.memory_working_set == 18292736  # total_inactive_file is 0
    assert sample.memory_cache == 12288 and sample.oom_kills == 0
    assert sample.cpu_limit == 0.5 and (sample.cpu_throttled, sample.cpu_periods) == (9, 14)
    assert sample.cpu_usage_ns == 555519997
    assert (sample.pids, sample.pids_limit) == (3, 128)


def test_v2_recorded_files_located_from_proc_cgroup() -> None:
    assert cgroup_version(V2_ROOT) == 2
    proc = (FIXTURES / "proc_self_cgroup").read_text()
    paths = locate(V2_ROOT, V2_ID, proc)
    assert paths.dirs[""] == V2_ROOT / "system.slice" / f"docker-{V2_ID}.scope"
    sample = read_sample(paths)
    assert sample.version == 2
    assert sample.memory_usage == 73400320 and sample.memory_limit == 134217728
    assert sample.memory_working_set == 73400320 - 10485760
    assert sample.memory_cache == 14680064 and sample.swap_limit == 0
    assert sample.memory_limit_hits == 17 and sample.oom_kills == 1
    assert sample.cpu_usage_ns == 2345678000 and sample.cpu_limit == 0.5
    assert (sample.cpu_throttled, sample.cpu_periods) == (37, 420)
    assert (sample.pids, sample.pids_limit) == (7, 512)
    assert (sample.io_read_bytes, sample.io_write_bytes) == (1048576 + 4096, 20971520)
    assert sample.memory_pressure == 12.5


def test_v2_fallback_to_the_systemd_scope_without_proc() -> None:
    assert locate(V2_ROOT, V2_ID).dirs[""].name == f"docker-{V2_ID}.scope"


def test_v1_locate_uses_proc_paths(tmp_path: Path) -> None:
    proc = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
    paths = locate(tmp_path, "abc", proc)
    assert paths.version == 1 and paths.dirs["memory"] == tmp_path / "memory" / "docker" / "abc"
    assert paths.dirs["cpuacct"] == tmp_path / "cpuacct" / "docker" / "abc"


def test_small_parsers() -> None:
    assert parse_cpu_max("max 100000") is None and parse_cpu_max("25000 100000") == 0.25
    assert parse_psi_avg10("full avg10=1.00 avg60=0 avg300=0 total=1") is None


def test_findings_limit_exceeded_and_pressure() -> None:
    base = read_sample(_v1_paths())
    hot = replace(
        base,
        memory_usage=134217728,
        memory_working_set=130_000_000,
        memory_limit_hits=4,
        cpu_throttled=20,
        cpu_usage_ns=base.cpu_usage_ns + 10**9,
        pids=128,
    )
    found = evaluate(base, hot, 0.9)
    kinds = {(f.event, f.resource) for f in found}
    assert kinds == {
        (EventType.LIMIT_EXCEEDED, "memory"),
        (EventType.MEMORY_PRESSURE, "memory"),
        (EventType.LIMIT_EXCEEDED, "pids"),
    }  # CPU throttling is judged over several samples (test_agent_cpu_throttle.py)
    assert evaluate(base, base, 0.9) == []


def test_psi_alone_signals_pressure() -> None:
    paths = locate(V2_ROOT, V2_ID)
    sample = replace(read_sample(paths), memory_working_set=1, memory_usage=1)
    assert [f.event for f in evaluate(None, sample, 0.9)] == [EventType.MEMORY_PRESSURE]


def test_edge_filter_reports_a_condition_once_until_it_clears() -> None:
    edges = EdgeFilter()
    finding = Finding(EventType.LIMIT_EXCEEDED, "pids", 10, 10)
    assert edges.fresh("i", [finding]) == [finding]
    assert edges.fresh("i", [finding]) == []
    assert edges.fresh("i", []) == []
    assert edges.fresh("i", [finding]) == [finding]
