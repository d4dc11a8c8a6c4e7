"""Reading a container's cgroup files, cgroup v1 and v2, into one sample shape.

Parsing is pure (text in, numbers out); ``locate`` and ``read_sample`` only read files,
so the v2 path is tested on recorded files.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CgroupPaths",
    "CgroupSample",
    "cgroup_version",
    "locate",
    "parse_cpu_max",
    "parse_flat_keyed",
    "parse_psi_avg10",
    "parse_v1_blkio",
    "parse_v2_io",
    "read_sample",
]

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio", "net_cls")
UNLIMITED_V1 = 1 << 62  # v1 reports "no limit" as a huge page-aligned number


@dataclass(frozen=True)
class CgroupSample:
    """One reading of a container's cgroup; None means unlimited or not available."""

    version: int
    memory_usage: int
    memory_working_set: int
    """Usage minus inactive file cache: what the OOM killer looks at (as kubelet)."""
    memory_cache: int
    memory_limit: int | None
    swap_limit: int | None
    """v1: memory+swap limit; v2: swap-only limit (0 means swap off)."""
    memory_limit_hits: int
    """Times usage hit the limit (v1 memory.failcnt, v2 memory.events max)."""
    oom_kills: int
    cpu_usage_ns: int
    cpu_limit: float | None
    """Cores (quota / period)."""
    cpu_throttled: int
    """Periods in which the container was throttled."""
    pids: int
    pids_limit: int | None
    io_read_bytes: int
    io_write_bytes: int
    memory_pressure: float | None = None
    """v2 PSI "some avg10" (percent of time stalled on memory), when available."""
    cpu_periods: int = 0
    """CFS periods in which the container had work (``nr_periods``)."""


@dataclass(frozen=True)
class CgroupPaths:
    """Where one container's cgroup files are: per controller (v1) or one directory (v2)."""

    version: int
    dirs: dict[str, Path]

    def file(self, controller: str, name: str) -> Path:
        return self.dirs.get(controller, self.dirs.get("", Path("/nonexistent"))) / name


def cgroup_version(cgroup_root: Path) -> int:
    """2 when the root is a unified (v2-only) hierarchy, else 1 (including hybrid)."""
    return 2 if (cgroup_root / "cgroup.controllers").exists() else 1


def _proc_cgroups(proc_cgroup_text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in proc_cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            out[controller.removeprefix("name=")] = path
    return out


def locate(cgroup_root: Path, container_id: str, proc_cgroup_text: str | None = None
           ) -> CgroupPaths:
    """The container's cgroup directories, from its main process's /proc/<pid>/cgroup
    when given, else Docker's conventional paths (cgroupfs or systemd driver)."""
    by_controller = _proc_cgroups(proc_cgroup_text) if proc_cgroup_text else {}
    if cgroup_version(cgroup_root) == 2:
        candidates = []
        if "" in by_controller:
            candidates.append(cgroup_root / by_controller[""].lstrip("/"))
        candidates += [cgroup_root / "system.slice" / f"docker-{container_id}.scope",
                       cgroup_root / "docker" / container_id]
        found = next((c for c in candidates if c.is_dir()), candidates[0])
        return CgroupPaths(2, {"": found})
    dirs: dict[str, Path] = {}
    for controller in V1_CONTROLLERS:
        relative = by_controller.get(controller, f"/docker/{container_id}")
        dirs[controller] = cgroup_root / controller / relative.lstrip("/")
    return CgroupPaths(1, dirs)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events, oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_v1_blkio(text: str) -> tuple[int, int]:
    """(read, write) bytes summed over devices from blkio.throttle.io_service_bytes."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read += int(parts[2])
            elif parts[1] == "Write":
                write += int(parts[2])
    return read, write


def parse_v2_io(text: str) -> tuple[int, int]:
    """(read, write) bytes summed over devices from io.stat."""
    read = write = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key == "rbytes" and value.isdigit():
                read += int(value)
            elif key == "wbytes" and value.isdigit():
                write += int(value)
    return read, write


def parse_cpu_max(text: str) -> float | None:
    """Cores from v2 ``cpu.max`` ("quota period" or "max period")."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return int(parts[0]) / int(parts[1])


def parse_psi_avg10(text: str) -> float | None:
    """The "some avg10" figure of a PSI file."""
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if key == "avg10":
                    return float(value)
    return None


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text()
    return ""


def _int(text: str) -> int:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else 0


def _limit(text: str) -> int | None:
    text = text.strip()
    if not text or text == "max":
        return None
    value = int(text)
    return None if value >= UNLIMITED_V1 else value


def read_sample(paths: CgroupPaths) -> CgroupSample:
    """Read every figure the monitor uses; missing files read as zero or unlimited."""
    if paths.version == 2:
        return _read_v2(paths)
    stat = parse_flat_keyed(_read(paths.file("memory", "memory.stat")))
    usage = _int(_read(paths.file("memory", "memory.usage_in_bytes")))
    inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    quota = _int(_read(paths.file("cpu", "cpu.cfs_quota_us")))
    period = _int(_read(paths.file("cpu", "cpu.cfs_period_us")))
    read, write = parse_v1_blkio(_read(paths.file("blkio", "blkio.throttle.io_service_bytes")))
    oom = parse_flat_keyed(_read(paths.file("memory", "memory.oom_control")))
    cpu_stat = parse_flat_keyed(_read(paths.file("cpu", "cpu.stat")))
    return CgroupSample(
        version=1,
        memory_usage=usage,
        memory_working_set=max(0, usage - inactive),
        memory_cache=stat.get("total_cache", stat.get("cache", 0)),
        memory_limit=_limit(_read(paths.file("memory", "memory.limit_in_bytes"))),
        swap_limit=_limit(_read(paths.file("memory", "memory.memsw.limit_in_bytes"))),
        memory_limit_hits=_int(_read(paths.file("memory", "memory.failcnt"))),
        oom_kills=oom.get("oom_kill", 0),
        cpu_usage_ns=_int(_read(paths.file("cpuacct", "cpuacct.usage"))),
        cpu_limit=quota / period if quota > 0 and period > 0 else None,
        cpu_throttled=cpu_stat.get("nr_throttled", 0),
        pids=_int(_read(paths.file("pids", "pids.current"))),
        pids_limit=_limit(_read(paths.file("pids", "pids.max"))),
        io_read_bytes=read,
        io_write_bytes=write,
        cpu_periods=cpu_stat.get("nr_periods", 0),
    )


def _read_v2(paths: CgroupPaths) -> CgroupSample:
    stat = parse_flat_keyed(_read(paths.file("", "memory.stat")))
    events = parse_flat_keyed(_read(paths.file("", "memory.events")))
    cpu = parse_flat_keyed(_read(paths.file("", "cpu.stat")))
    usage = _int(_read(paths.file("", "memory.current")))
    read, write = parse_v2_io(_read(paths.file("", "io.stat")))
    return CgroupSample(
        version=2,
        memory_usage=usage,
        memory_working_set=max(0, usage - stat.get("inactive_file", 0)),
        memory_cache=stat.get("file", 0),
        memory_limit=_limit(_read(paths.file("", "memory.max"))),
        swap_limit=_limit(_read(paths.file("", "memory.swap.max"))),
        memory_limit_hits=events.get("max", 0),
        oom_kills=events.get("oom_kill", 0),
        cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
        cpu_limit=parse_cpu_max(_read(paths.file("", "cpu.max"))),
        cpu_throttled=cpu.get("nr_throttled", 0),
        pids=_int(_read(paths.file("", "pids.current"))),
        pids_limit=_limit(_read(paths.file("", "pids.max"))),
        io_read_bytes=read,
        io_write_bytes=write,
        memory_pressure=parse_psi_avg10(_read(paths.file("", "memory.pressure"))),
        cpu_periods=cpu.get("nr_periods", 0),
    )
