"""Garbage collection on a schedule (and on demand): unused instances, memory, disk cache
(the kinds of ``common.gc_kinds.GcKind``).

- unused (every 30 min; its setting keeps the name ``gc_idle_interval``): instances idle
  past their unit's threshold, never of the stable version, are removed safely: state
  backed up (with retention), graceful stop, egress class and container released, record
  deleted. A whole idle unit, stable version included, is the leader's call (it sees every
  host's requests; coordinator/fleet/idle.py): ``StopInstance(collect=True)`` runs the same
  safe removal but keeps the record in ``collected`` (an instance's own snapshot state
  directory is freed too, its backup kept), and ``restore`` puts the state back at the wake.
- memory (every 5 min): page cache of idle instances, and of instances under memory
  pressure, is reclaimed (cgroup v1 ``memory.force_empty``, v2 ``memory.reclaim``).
- cache (every hour): dumps and stopped landlord containers past their age; above the
  disk high watermark also landlord images outside the 3 latest versions of each unit
  and its protected versions (stable and previous stable, sent by the coordinator with the
  unit's route), oldest first, down to the low watermark. Images are matched by tag and by
  digest reference (RepoDigests), and one a container uses is never removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.gc.plan import (
    CacheItem,
    evictable_images,
    images_to_keep,
    normal_reference,
    plan_cache_eviction,
    plan_idle_collection,
)
from agent.instances.container_config import LABEL_HOST
from agent.instances.events import AgentEvent, EventType
from agent.instances.private_files import open_private, private_dir
from agent.instances.spec import InstanceSpec, StateMode
from agent.instances.state_copy import archive_state
from agent.instances.store import InstanceRecord
from agent.limits.cgroups import read_sample
from agent.limits.storage import measure_tree
from common.errors import LandlordError
from common.gc_kinds import GcKind, parse_gc_kinds
from common.lifecycle import InstanceState

if TYPE_CHECKING:
    from agent.instances.resource_monitor import ResourceMonitor
    from agent.instances.supervisor import Supervisor

__all__ = ["GarbageCollector"]

log = logging.getLogger(__name__)
S = InstanceState
DiskUsage = Callable[[], tuple[int, int]]


class GarbageCollector:
    def __init__(self, supervisor: Supervisor, monitor: ResourceMonitor,
                 disk_usage: DiskUsage | None = None) -> None:
        self.sup = supervisor
        self.monitor = monitor
        self.config = supervisor.config
        data = self.config.data_dir
        self.backups = data / "backups"
        self._stable_file = data / "stable.json"
        self._history_file = data / "images.json"
        self._protected_file = data / "protected.json"
        self.stable: dict[tuple[str, str], str] = {}
        self.history: dict[str, dict[str, str]] = {}
        self.protected: dict[str, list[str]] = {}
        """Unit key -> versions whose images stay (stable and previous stable)."""
        self._load()
        self.disk_usage = disk_usage or self._disk_usage

    # -- persisted inputs --------------------------------------------------------------
    def _load(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            raw = json.loads(self._stable_file.read_text())
            for key, version in raw.items():
                apartment, _, unit = key.partition("/")
                self.stable[(apartment, unit)] = version
        with contextlib.suppress(OSError, ValueError):
            self.history = json.loads(self._history_file.read_text())
        with contextlib.suppress(OSError, ValueError):
            self.protected = json.loads(self._protected_file.read_text())

    def protect(self, apartment: str, unit: str, versions: tuple[str, ...]) -> None:
        """Keep the images of these versions of the unit (replaces the unit's last set)."""
        key = f"{apartment}/{unit}"
        wanted = sorted(set(versions))
        if self.protected.get(key, []) == wanted:
            return
        if wanted:
            self.protected[key] = wanted
        else:
            self.protected.pop(key, None)
        self._protected_file.write_text(json.dumps(self.protected))

    def set_stable(self, apartment: str, unit: str, version: str | None) -> None:
        if version is None:
            self.stable.pop((apartment, unit), None)
        else:
            self.stable[(apartment, unit)] = version
        self._stable_file.write_text(json.dumps({f"{a}/{u}": v
                                                 for (a, u), v in self.stable.items()}))

    def remember(self, spec: InstanceSpec) -> None:
        """Note the image of a version this host ran (for keep-the-latest-3)."""
        versions = self.history.setdefault(f"{spec.apartment}/{spec.unit}", {})
        if versions.get(spec.version) != spec.image:
            versions[spec.version] = spec.image
            self._history_file.write_text(json.dumps(self.history))

    def _disk_usage(self) -> tuple[int, int]:
        usage = shutil.disk_usage(self.config.data_dir)
        return usage.used, usage.total

    # -- entry points ------------------------------------------------------------------
    async def run_kind(self, kind: GcKind | str) -> dict[str, Any]:
        """Run one kind now (InvalidArgument for a name that is not a GcKind)."""
        [kind] = parse_gc_kinds([kind], "kind")
        if kind is GcKind.UNUSED:
            return {"collected": await self.collect_idle()}
        if kind is GcKind.MEMORY:
            return {"reclaimed": await self.optimize_memory()}
        return {"evicted": [i.__dict__ for i in await self.evict_cache()]}

    async def run(self, stop: asyncio.Event) -> None:
        """The three schedules, until ``stop`` is set."""
        config = self.config
        loops = [self._every(config.gc_idle_interval, GcKind.UNUSED, stop),
                 self._every(config.gc_memory_interval, GcKind.MEMORY, stop),
                 self._every(config.gc_cache_interval, GcKind.CACHE, stop)]
        await asyncio.gather(*loops)

    async def _every(self, interval: float, kind: GcKind, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
                return
            try:
                await self.run_kind(kind)
            except (LandlordError, OSError) as exc:
                log.error("gc %s failed: %s", kind, exc)

    # -- idle instances ----------------------------------------------------------------
    async def collect_idle(self) -> list[str]:
        sup = self.sup
        decisions = plan_idle_collection(sup.records.all(), sup.clock.now(),
                                         self.stable, sup.last_activity)
        collected = []
        for decision in decisions:
            record = sup.records.find(decision.instance_id)
            if decision.collect and record is not None and \
                    await self.collect_instance(record, decision.reason):
                collected.append(decision.instance_id)
        return collected

    async def collect_instance(self, record: InstanceRecord, reason: str,
                               keep: bool = False) -> bool:
        """Safe removal. ``keep`` (the leader collects a whole idle unit): no re-check of
        this host's idle plan, and the record stays in ``collected`` for a wake."""
        sup = self.sup
        async with sup.lock(record.instance_id):
            if sup.records.find(record.instance_id) is not record:
                return False
            if keep:
                if record.lifecycle.state not in (S.RUNNING, S.PAUSED):
                    log.info("not collecting %s: %s", record.instance_id,
                             record.lifecycle.state.value)
                    return False
                sup.failures.cancel(record.instance_id)
            else:  # re-check under the lock: a request or a state change may have come in
                again = plan_idle_collection([record], sup.clock.now(), self.stable,
                                             sup.last_activity)
                if not again or not again[0].collect:
                    return False
            backup = None
            state_dir = sup.state_host_dir(record.spec)
            if record.spec.state_mode is not StateMode.NONE and state_dir is not None:
                backup = await asyncio.to_thread(self._backup, record.spec, state_dir)
            if record.lifecycle.state in (S.RUNNING, S.PAUSED):
                sup.move(record, S.STOPPING, f"gc: {reason}")
            await sup.stop_container(record, self.config.stop_grace)
            if keep:
                sup.move(record, S.COLLECTED, f"gc: {reason}")
            else:
                sup.settle_stopped(record, f"gc: {reason}")
            await sup.release(record)
            sup.publish(record, EventType.GC_COLLECTED, reason=reason,
                        backup=str(backup) if backup else None)
            if not keep:
                sup.forget(record, f"gc: {reason}")
                return True
            if backup is not None and record.spec.state_mode is StateMode.SNAPSHOT \
                    and state_dir is not None:  # its own disk, freed: the backup has it
                await asyncio.to_thread(shutil.rmtree, state_dir, True)
            record.container_id, record.classid = None, None
            record.lifecycle.metadata["collected"] = reason
            if backup is not None:
                record.lifecycle.metadata["backup"] = str(backup)
            sup.save(record)
            return True

    def restore(self, spec: InstanceSpec) -> Path | None:
        """Put the newest backup of a collected instance back into its state directory when
        that directory is gone (a snapshot-mode one is freed at collection); returns the
        backup used. Members are checked by tarfile's ``tar`` filter: nothing lands outside
        the directory, links stay links, owners and modes are kept."""
        state_dir = self.sup.state_host_dir(spec)
        backups = sorted((self.backups / spec.apartment / spec.unit / spec.instance_id)
                         .glob("*.tar.gz"))
        if state_dir is None or state_dir.exists() or not backups:
            return None
        staging = state_dir.with_name(f".{state_dir.name}.restoring")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, mode=0o700)
        with tarfile.open(backups[-1], "r:gz") as archive:
            archive.extractall(staging, filter="tar")
        restored = staging / "state"
        restored.mkdir(exist_ok=True, mode=0o700)
        restored.rename(state_dir)
        shutil.rmtree(staging, ignore_errors=True)
        return backups[-1]

    def _backup(self, spec: InstanceSpec, state_dir: Path) -> Path:
        target_dir = private_dir(self.backups / spec.apartment / spec.unit / spec.instance_id,
                                 within=self.backups)
        stamp = datetime.fromtimestamp(self.sup.clock.now()).strftime("%Y%m%dT%H%M%S.%f")
        target = target_dir / f"{stamp}.tar.gz"
        tmp = target.with_suffix(".partial")
        with os.fdopen(open_private(tmp), "wb") as out, \
                tarfile.open(fileobj=out, mode="w:gz") as archive:
            # the container still runs: links are archived as links, never followed
            archive_state(state_dir, archive, "state")
        tmp.rename(target)
        kept = sorted(target_dir.glob("*.tar.gz"))
        for old in kept[:-self.config.backup_retention or None]:
            old.unlink(missing_ok=True)
        return target

    # -- memory ------------------------------------------------------------------------
    async def optimize_memory(self) -> list[dict[str, Any]]:
        sup = self.sup
        now = sup.clock.now()
        results = []
        for record in sup.records.all():
            if record.lifecycle.state is not S.RUNNING:
                continue
            tracked = await self.monitor.track(record)
            if tracked is None:
                continue
            before = await asyncio.to_thread(read_sample, tracked.paths)
            idle = now - sup.last_activity(record) >= self.config.memory_reclaim_idle
            pressure = bool(before.memory_limit) and before.memory_working_set >= (
                self.config.memory_pressure_ratio * (before.memory_limit or 0))
            if not (idle or pressure) or before.memory_cache == 0:
                continue
            how = await asyncio.to_thread(self._reclaim, tracked.paths.version,
                                          self.monitor.memory_dir(record.instance_id),
                                          before.memory_cache)
            after = await asyncio.to_thread(read_sample, tracked.paths)
            result = {"instance": record.instance_id, "how": how,
                      "why": "idle" if idle else "memory pressure",
                      "cache_before": before.memory_cache, "cache_after": after.memory_cache,
                      "usage_before": before.memory_usage, "usage_after": after.memory_usage}
            sup.publish(record, EventType.GC_MEMORY, **result)
            results.append(result)
        return results

    @staticmethod
    def _reclaim(version: int, memory_dir: Path | None, cache: int) -> str:
        if memory_dir is None:
            return "no cgroup"
        try:
            if version == 2:
                (memory_dir / "memory.reclaim").write_text(str(cache))
                return "memory.reclaim"
            (memory_dir / "memory.force_empty").write_text("0")
            return "memory.force_empty"
        except OSError as exc:  # EBUSY/EAGAIN: reclaimed what it could
            return f"partial: {exc.strerror}"

    # -- disk cache --------------------------------------------------------------------
    async def evict_cache(self) -> list[CacheItem]:
        sup = self.sup
        items = await self._cache_items()
        used, total = self.disk_usage()
        chosen = plan_cache_eviction(
            items, sup.clock.now(), used, total, self.config.disk_high_watermark,
            self.config.disk_low_watermark,
            {"dump": self.config.dump_max_age,
             "container": self.config.stopped_container_max_age})
        done = []
        for item in chosen:
            try:
                if item.kind == "image":
                    for ref in item.refs or (item.ref,):
                        await sup.runtime.remove_image(ref)
                elif item.kind == "container":
                    await sup.runtime.remove(item.ref, force=True)
                else:
                    await asyncio.to_thread(shutil.rmtree, item.ref, True)
                done.append(item)
            except LandlordError as exc:  # e.g. an image a container still uses
                log.warning("cache eviction of %s %s skipped: %s", item.kind, item.ref, exc)
        if done:
            sup.bus.publish(AgentEvent(EventType.GC_CACHE, "", "", "", sup.clock.now(), {
                "removed": [{"kind": i.kind, "ref": i.ref, "size": i.size} for i in done],
                "disk_used_fraction": round(used / total, 4) if total else None}))
        return done

    async def _cache_items(self) -> list[CacheItem]:
        sup = self.sup
        current = {r.container_id for r in sup.records.all() if r.container_id}
        items: list[CacheItem] = []
        containers = await sup.runtime.list_containers({LABEL_HOST: self.config.host_id})
        for info in containers:
            if info.running or info.id in current or sup.records.owns_container(info.id):
                continue
            items.append(CacheItem("container", info.id, 0, _parse_time(info.finished_at)))
        in_use = {c.image for c in containers} | {r.spec.image for r in sup.records.all()}
        in_use_ids = {str(c.raw.get("Image") or "") for c in containers} - {""}
        keep = images_to_keep(self.history, self.config.keep_versions, in_use, self.protected)
        known = {normal_reference(image) for versions in self.history.values()
                 for image in versions.values()}
        items += evictable_images(await sup.runtime.images(), known, keep, in_use_ids)
        dumps = self.config.data_dir / "dumps"
        for directory in (d for parent in _dirs(dumps) for d in _dirs(parent)):
            size = await asyncio.to_thread(measure_tree, directory)
            items.append(CacheItem("dump", str(directory), size, directory.stat().st_mtime))
        return items


def _dirs(path: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return sorted(p for p in path.iterdir() if p.is_dir())
    return []


def _parse_time(text: str) -> float:
    with contextlib.suppress(ValueError):
        trimmed = text.split(".")[0].rstrip("Z")
        return datetime.fromisoformat(trimmed + "+00:00").timestamp()
    return time.time()
