"""Resource monitor: samples each instance's cgroup (and its main process with psutil),
publishes ``limit_exceeded`` / ``memory_pressure`` when a condition starts (CPU: when
throttling near the limit is sustained, ``agent.limits.cpu_throttle``), feeds the
memory-leak judgement, and measures storage for eviction."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from agent.instances.events import EventType
from agent.instances.store import InstanceRecord
from agent.limits.cgroups import CgroupPaths, CgroupSample, locate, read_sample
from agent.limits.cpu_throttle import ThrottleEpisodes, ThrottleRule, cpu_interval
from agent.limits.storage import judge_storage, measure_tree
from common.errors import LandlordError
from common.lifecycle import InstanceState
from common.recovery import LeakAssessment, assess_memory_trend

if TYPE_CHECKING:
    from agent.instances.supervisor import Supervisor

__all__ = ["EdgeFilter", "Finding", "LeakHandler", "ResourceMonitor", "cpu_finding", "evaluate",
           "main_process_pid"]

S = InstanceState
SAMPLED_STATES = frozenset({S.INITIALIZING, S.READY, S.RUNNING})
PSI_PRESSURE = 10.0  # percent of time stalled on memory (v2 "some avg10")


INIT_NAMES = frozenset({"docker-init", "tini", "tini-static"})


def main_process_pid(pid: int) -> int:
    """The workload's main process: the child of the container's init when there is one."""
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if process.name() in INIT_NAMES:
            children = process.children()
            if children:
                return children[0].pid
    return pid


@dataclass(frozen=True)
class Finding:
    event: str
    resource: str
    usage: float
    limit: float


def evaluate(prev: CgroupSample | None, cur: CgroupSample, pressure_ratio: float
             ) -> list[Finding]:
    """Memory and pids conditions true in ``cur`` (``prev`` is the previous sample); CPU
    throttling is judged over several samples (``cpu_finding``)."""
    out: list[Finding] = []
    limit = cur.memory_limit
    if limit:
        hit = prev is not None and (cur.memory_limit_hits > prev.memory_limit_hits
                                    or cur.oom_kills > prev.oom_kills)
        if hit or cur.memory_usage >= limit:
            out.append(Finding(EventType.LIMIT_EXCEEDED, "memory", cur.memory_usage, limit))
        if cur.memory_working_set >= pressure_ratio * limit:
            out.append(Finding(EventType.MEMORY_PRESSURE, "memory", cur.memory_working_set,
                               limit))
    if (cur.memory_pressure or 0.0) >= PSI_PRESSURE and not any(
            f.event == EventType.MEMORY_PRESSURE for f in out):
        out.append(Finding(EventType.MEMORY_PRESSURE, "memory", cur.memory_working_set,
                           float(limit or 0)))
    if cur.pids_limit and cur.pids >= cur.pids_limit:
        out.append(Finding(EventType.LIMIT_EXCEEDED, "pids", cur.pids, cur.pids_limit))
    return out


def cpu_finding(episodes: ThrottleEpisodes, prev: CgroupSample | None, cur: CgroupSample,
                seconds: float) -> Finding | None:
    """A cpu ``limit_exceeded`` when this sample starts a sustained-throttling episode."""
    interval = cpu_interval(prev, cur, seconds) if prev is not None else None
    if not episodes.observe(interval) or interval is None:
        return None
    return Finding(EventType.LIMIT_EXCEEDED, "cpu", round(interval.cores, 3), interval.limit)


@dataclass
class EdgeFilter:
    """Lets a finding through when its condition starts, not on every sample."""

    active: dict[str, set[tuple[str, str]]] = field(default_factory=dict)

    def fresh(self, key: str, findings: Iterable[Finding]) -> list[Finding]:
        now = {(f.event, f.resource): f for f in findings}
        before = self.active.get(key, set())
        self.active[key] = set(now)
        return [f for k, f in now.items() if k not in before]

    def forget(self, key: str) -> None:
        self.active.pop(key, None)


@dataclass
class _Tracked:
    container_id: str
    pid: int
    paths: CgroupPaths
    upper_dir: str | None
    cpu: ThrottleEpisodes
    last: tuple[float, CgroupSample] | None = None
    memory: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=10_000))
    figures: dict[str, Any] = field(default_factory=dict)


class LeakHandler(Protocol):
    """Who acts on a memory leak (``agent.instances.recovery.Recovery``)."""

    async def on_leak(self, record: InstanceRecord, assessment: LeakAssessment, pid: int,
                      memory_dir: Path | None, samples: Sequence[tuple[float, int]]) -> None:
        ...


class ResourceMonitor:
    def __init__(self, supervisor: Supervisor, leaks: LeakHandler,
                 proc_root: Path = Path("/proc")) -> None:
        self.sup = supervisor
        self.leaks = leaks
        self.proc_root = proc_root
        self.edges = EdgeFilter()
        config = supervisor.config
        self.throttle_rule = ThrottleRule(config.cpu_throttle_samples, config.cpu_throttle_ratio,
                                          config.cpu_throttle_usage_ratio)
        self._tracked: dict[str, _Tracked] = {}

    async def track(self, record: InstanceRecord) -> _Tracked | None:
        container_id = record.container_id
        if container_id is None:
            return None
        tracked = self._tracked.get(record.instance_id)
        if tracked is not None and tracked.container_id == container_id:
            return tracked
        try:
            info = await self.sup.runtime.inspect(container_id)
        except LandlordError:
            return None
        if not info.pid:
            return None
        proc_cgroup = ""
        with contextlib.suppress(OSError):
            proc_cgroup = (self.proc_root / str(info.pid) / "cgroup").read_text()
        paths = locate(self.sup.config.cgroup_root, container_id, proc_cgroup)
        tracked = _Tracked(container_id, main_process_pid(info.pid), paths, info.upper_dir,
                           ThrottleEpisodes(self.throttle_rule))
        self._tracked[record.instance_id] = tracked
        self.edges.forget(record.instance_id)
        return tracked

    def memory_dir(self, instance_id: str) -> Path | None:
        tracked = self._tracked.get(instance_id)
        if tracked is None:
            return None
        return tracked.paths.dirs.get("memory", tracked.paths.dirs.get(""))

    def figures(self, instance_id: str) -> dict[str, Any]:
        tracked = self._tracked.get(instance_id)
        return dict(tracked.figures) if tracked else {}

    async def sample_once(self) -> None:
        sup = self.sup
        config = sup.config
        due: list[tuple[InstanceRecord, _Tracked]] = []
        for record in sup.records.all():
            if record.lifecycle.state not in SAMPLED_STATES:
                self._tracked.pop(record.instance_id, None)
                continue
            tracked = await self.track(record)
            if tracked is not None:
                due.append((record, tracked))
        # one thread hop per tick, not one per instance
        readings = await asyncio.to_thread(
            lambda: [(read_sample(t.paths), self._figures_of(t.pid)) for _, t in due])
        now = sup.clock.monotonic()
        for (record, tracked), (sample, process) in zip(due, readings, strict=True):
            prev = tracked.last
            findings = evaluate(prev[1] if prev else None, sample, config.memory_pressure_ratio)
            cpu = cpu_finding(tracked.cpu, prev[1] if prev else None, sample,
                              now - prev[0] if prev else 0.0)
            if cpu is not None:  # already once per episode; the edge filter lets it by
                findings.append(cpu)
            tracked.last = (now, sample)
            tracked.figures = {**self._figures(sample), **process}
            for finding in self.edges.fresh(record.instance_id, findings):
                sup.publish(record, finding.event, resource=finding.resource,
                            usage=finding.usage, limit=finding.limit)
            await self._judge_leak(record, tracked, sample)

    @staticmethod
    def _figures(sample: CgroupSample) -> dict[str, Any]:
        return {
            "memory_usage": sample.memory_usage,
            "memory_working_set": sample.memory_working_set,
            "memory_cache": sample.memory_cache,
            "memory_limit": sample.memory_limit,
            "cpu_usage_ns": sample.cpu_usage_ns,
            "cpu_throttled": sample.cpu_throttled,
            "pids": sample.pids,
            "io_read_bytes": sample.io_read_bytes,
            "io_write_bytes": sample.io_write_bytes,
        }

    @staticmethod
    def _figures_of(pid: int) -> dict[str, Any]:
        """The main process as psutil sees it (RSS, threads)."""
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            with process.oneshot():
                return {"main_rss": process.memory_info().rss,
                        "main_threads": process.num_threads()}
        return {}

    async def _judge_leak(self, record: InstanceRecord, tracked: _Tracked,
                          sample: CgroupSample) -> None:
        config = self.sup.config
        now = self.sup.clock.now()
        tracked.memory.append((now, sample.memory_working_set))
        while tracked.memory and tracked.memory[0][0] < now - config.leak_window:
            tracked.memory.popleft()
        if record.lifecycle.state is not S.RUNNING or record.recovery.kind is not None:
            return
        assessment = assess_memory_trend(
            list(tracked.memory),
            min_span_s=max(0.0, config.leak_window - 2 * config.monitor_interval),
            min_samples=config.leak_min_samples)
        if assessment.leaking:
            samples = list(tracked.memory)
            tracked.memory.clear()
            await self.leaks.on_leak(record, assessment, tracked.pid,
                                     self.memory_dir(record.instance_id), samples)

    # -- storage -----------------------------------------------------------------------
    async def check_storage_once(self) -> None:
        sup = self.sup
        for record in sup.records.all():
            limit = record.spec.resources.storage
            if record.lifecycle.state is not S.RUNNING or not limit:
                continue
            tracked = await self.track(record)
            if tracked is None:
                continue
            state_dir = sup.state_host_dir(record.spec)
            layer = await asyncio.to_thread(measure_tree, tracked.upper_dir) \
                if tracked.upper_dir else 0
            state = await asyncio.to_thread(measure_tree, state_dir) if state_dir else 0
            verdict = judge_storage(layer, state, limit)
            tracked.figures["storage_usage"] = verdict.usage
            if verdict.evict:
                await sup.evict(record, verdict.reason, verdict.usage, verdict.limit)
