"""Crash and memory dumps written to ``<data_dir>/dumps/<instance>/<time>-<kind>-g<gen>/``.

Root-only (0600 files in 0700 directories): logs and inspect documents are private.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.instances.private_files import private_dir, write_private

__all__ = ["DumpWriter"]

PROC_FILES = ("smaps_rollup", "status", "cmdline", "limits")


class DumpWriter:
    """Writes dump directories; blocking file I/O (call it from a thread)."""

    def __init__(self, data_dir: Path, proc_root: Path = Path("/proc")) -> None:
        self.root = data_dir / "dumps"
        self.proc_root = proc_root

    def _new_dir(self, instance_id: str, kind: str, generation: int, now: float) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.3f}"[1:]
        directory = self.root / instance_id / f"{stamp}-{kind}-g{generation}"
        return private_dir(directory, within=self.root)

    def write_crash(
        self,
        instance_id: str,
        generation: int,
        now: float,
        *,
        exit_code: int | None,
        oom_killed: bool,
        reason: str,
        logs: str,
        inspect: Mapping[str, Any],
    ) -> Path:
        """exit code, OOM flag, the last log lines and the full inspect document."""
        directory = self._new_dir(instance_id, "crash", generation, now)
        summary = {"instance": instance_id, "generation": generation, "time": now,
                   "exit_code": exit_code, "oom_killed": oom_killed, "reason": reason}
        write_private(directory / "crash.json", json.dumps(summary, indent=2))
        write_private(directory / "logs.txt", logs)
        write_private(directory / "inspect.json", json.dumps(inspect, indent=2, default=str))
        return directory

    def write_memory(
        self,
        instance_id: str,
        generation: int,
        now: float,
        *,
        pid: int,
        cgroup_memory_dir: Path | None,
        samples: Sequence[tuple[float, int]],
        reason: str,
    ) -> Path:
        """smaps_rollup, status, cmdline and limits of the main process, the cgroup's
        memory statistics and the samples the leak was judged on."""
        directory = self._new_dir(instance_id, "memory", generation, now)
        copied: list[str] = []
        for name in PROC_FILES:
            with contextlib.suppress(OSError):
                data = (self.proc_root / str(pid) / name).read_bytes()
                write_private(directory / f"proc-{name}", data)
                copied.append(f"proc-{name}")
        if cgroup_memory_dir is not None:
            for name in ("memory.stat", "memory.usage_in_bytes", "memory.max_usage_in_bytes",
                         "memory.limit_in_bytes", "memory.current", "memory.max",
                         "memory.events", "memory.pressure"):
                with contextlib.suppress(OSError):
                    data = (cgroup_memory_dir / name).read_bytes()
                    write_private(directory / f"cgroup-{name}", data)
                    copied.append(f"cgroup-{name}")
        summary = {"instance": instance_id, "generation": generation, "time": now, "pid": pid,
                   "reason": reason, "files": copied, "samples": [list(s) for s in samples]}
        write_private(directory / "memory.json", json.dumps(summary, indent=2))
        return directory
