"""A simulated fleet and store for driving the rollout runner with a fake clock.

Recording fakes for unit tests of pure logic only: instances appear when started (healthy
after ``start_delay_s``), traffic follows the last split, and windows are made from each
version's configured error rate, latency and request rate. Every committed record, every
split and every action is kept so tests can check the whole history. The fakes also check
invariants as they go (unit-state transitions follow common.lifecycle's table; a split never
moves traffic to a version without a healthy instance; no version ever has more instances
than asked).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from common.clock import FakeClock
from common.errors import Conflict, NotFound, Unavailable
from common.latency import LatencySketch
from common.lifecycle import DEPLOY_TRANSITIONS, DeployState, check_transition
from common.rollout_policy import Window
from coordinator.rollouts.actions import (
    CheckReport,
    EmitEvent,
    InstanceView,
    RunChecks,
    SetSplit,
    SetUnitState,
    StartInstances,
    StopInstances,
)
from coordinator.rollouts.controls import new_rollout, request_control
from coordinator.rollouts.record import Control, RolloutRecord, decode_record, encode_record
from coordinator.rollouts.runner import RolloutRunner, RunnerSettings
from coordinator.rollouts.settings import RolloutSettings

__all__ = ["Crash", "Traffic", "World", "make_record"]


class Crash(Exception):
    """Raised by the world to kill a runner at a chosen moment (a leader dying)."""


@dataclass
class Traffic:
    """How a version behaves under load."""

    error_rate: float = 0.0
    latency_ms: float = 20.0


def make_record(
    settings: RolloutSettings,
    from_version: str = "1.0.0",
    to_version: str = "1.1.0",
    rollout_id: str = "r1",
    now: float = 1_700_000_000.0,
) -> RolloutRecord:
    return new_rollout(
        rollout_id,
        "acme",
        "shop",
        "b1",
        from_version,
        to_version,
        settings,
        now,
        new_slot="green",
        old_instances=("old-0", "old-1"),
    )


@dataclass
class World:
    clock: FakeClock = field(default_factory=FakeClock)
    hosts: tuple[str, ...] = ("h2", "h3", "h4")
    rps: float = 100.0
    """Total requests per second entering the unit (split by weight)."""
    start_delay_s: float = 2.0
    traffic: dict[str, Traffic] = field(default_factory=dict)
    instances: dict[str, InstanceView] = field(default_factory=dict)
    born: dict[str, float] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)
    split_history: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    sticky_history: list[tuple[dict[str, float], bool]] = field(default_factory=list)
    """Every split sent, with whether it was sticky."""
    failed_checks: tuple[str, ...] = ()
    check_p95_ms: float | None = 30.0
    unit_state: DeployState = DeployState.RUNNING
    stable_version: str = "1.0.0"
    unit_states: list[str] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)
    log: list[tuple[float, str]] = field(default_factory=list)
    stored: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    commits: list[RolloutRecord] = field(default_factory=list)
    revision: int = 0
    fail_actions: set[str] = field(default_factory=set)
    """Action kinds ("split", "start", "stop", "checks", "state") that raise Unavailable."""
    schedule: list[tuple[float, Callable[[World], None]]] = field(default_factory=list)
    crash_after_commits: int | None = None
    """Die right after this many commits, before their actions."""
    crash_before_commits: int | None = None
    """Die just before commit number N, after the actions of commit N-1 ran."""
    crashes: int = 0
    starts: int = 0
    deadline: float = float("inf")
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        for index in range(2):
            self.instances[f"old-{index}"] = InstanceView(
                f"old-{index}", self.hosts[index % len(self.hosts)], "1.0.0", True
            )
            self.born[f"old-{index}"] = self.clock.now() - 3600
        self.split = {"1.0.0": 100.0}

    # -- scenario controls ------------------------------------------------------------------

    def at(self, offset_s: float, change: Callable[[World], None]) -> None:
        """Run ``change`` once the clock passes start + ``offset_s``."""
        self.schedule.append((self.clock.now() + offset_s, change))

    def set_health(self, version: str, healthy: bool) -> None:
        for iid, inst in list(self.instances.items()):
            if inst.version == version:
                self.instances[iid] = replace(inst, healthy=healthy)

    def escalate(self, version: str) -> None:
        for iid, inst in list(self.instances.items()):
            if inst.version == version:
                self.instances[iid] = replace(inst, healthy=False, state="error", escalated=True)
                break

    def of_version(self, version: str) -> list[InstanceView]:
        return [i for i in self.instances.values() if i.version == version]

    # -- RolloutFleet -----------------------------------------------------------------------

    def instances_view(self) -> tuple[InstanceView, ...]:
        now = self.clock.now()
        out = []
        for iid, inst in sorted(self.instances.items()):
            ready = now - self.born[iid] >= self.start_delay_s
            out.append(inst if ready or inst.escalated else replace(inst, healthy=False))
        return tuple(out)

    def window(self, version: str, since: float, now: float) -> Window | None:
        share = self.split.get(version, 0.0)
        seconds = max(0.0, now - since)
        requests = int(self.rps * share / 100 * seconds)
        behaviour = self.traffic.get(version, Traffic())
        errors = round(requests * behaviour.error_rate)
        sketch = LatencySketch()
        if requests:
            sketch.add(behaviour.latency_ms, requests)
        return Window(requests, errors, sketch, seconds)

    def _maybe_fail(self, kind: str) -> None:
        if kind in self.fail_actions:
            raise Unavailable(f"simulated {kind} failure")

    async def start(self, record: RolloutRecord, action: StartInstances) -> None:
        self._maybe_fail("start")
        self.log.append((self.clock.now(), f"start {action.version}"))
        have = self.of_version(action.version)
        for _ in range(action.replicas - len(have)):
            iid = f"{action.version}-{next(self._ids)}"
            host = self.hosts[len(self.instances) % len(self.hosts)]
            self.instances[iid] = InstanceView(iid, host, action.version, True)
            self.born[iid] = self.clock.now()
            self.starts += 1
        assert len(self.of_version(action.version)) == max(action.replicas, len(have))

    async def set_split(self, record: RolloutRecord, action: SetSplit) -> None:
        self._maybe_fail("split")
        view = {i.instance_id: i for i in self.instances_view()}
        for version, percent in action.split.items():
            if percent > self.split.get(version, 0.0):
                assert any(i.healthy for i in view.values() if i.version == version), (
                    f"traffic moved to {version} without a healthy instance"
                )
        assert abs(sum(action.split.values()) - 100) < 1e-9
        self.log.append((self.clock.now(), f"split {dict(action.split)}"))
        if dict(action.split) != self.split:
            self.split_history.append((self.clock.now(), dict(action.split)))
        self.sticky_history.append((dict(action.split), action.sticky))
        self.split = dict(action.split)

    async def stop(self, record: RolloutRecord, action: StopInstances) -> None:
        self._maybe_fail("stop")
        self.log.append((self.clock.now(), f"stop {action.version}"))
        for iid in [i for i, v in self.instances.items() if v.version == action.version]:
            assert self.split.get(action.version, 0.0) == 0.0, "stopping a version with traffic"
            del self.instances[iid]

    async def checks(self, record: RolloutRecord, action: RunChecks) -> CheckReport:
        self._maybe_fail("checks")
        self.log.append((self.clock.now(), "checks"))
        return CheckReport(
            0, self.failed_checks, self.check_p95_ms if action.measure_latency else None
        )

    # -- RolloutStore -----------------------------------------------------------------------

    async def load(self, record: RolloutRecord) -> tuple[RolloutRecord, int]:
        found = self.stored.get(record.rollout_id)
        if found is None:
            raise NotFound(record.rollout_id)
        return decode_record(found[0]), found[1]

    async def save(self, record: RolloutRecord, revision: int) -> int:
        if self.crash_before_commits is not None and len(self.commits) + 1 >= (
            self.crash_before_commits
        ):
            # the previous commit's actions are done; the new leader runs them again
            self.crash_before_commits = None
            raise Crash(f"leader died before commit {len(self.commits) + 1}")
        current = self.stored.get(record.rollout_id)
        if (current[1] if current else 0) != revision:
            raise Conflict("record changed")
        self.revision += 1
        data = encode_record(record)
        assert decode_record(data) == record, "the record must survive JSON"
        self.stored[record.rollout_id] = (data, self.revision)
        self.commits.append(record)
        self.log.append((self.clock.now(), f"commit {record.phase.value}#{record.seq}"))
        if self.crash_after_commits is not None and len(self.commits) >= self.crash_after_commits:
            self.crash_after_commits = None
            raise Crash(f"leader died after commit {len(self.commits)}")
        return self.revision

    async def set_unit_state(self, record: RolloutRecord, action: SetUnitState) -> None:
        self._maybe_fail("state")
        target = DeployState(action.state)
        if target != self.unit_state:
            check_transition(DEPLOY_TRANSITIONS, self.unit_state, target)
            self.unit_state = target
            self.unit_states.append(target.value)
        if action.stable_version:
            self.stable_version = action.stable_version

    async def emit(self, record: RolloutRecord, event: EmitEvent) -> None:
        self.events.append(event)

    def control(self, rollout_id: str, control: Control) -> None:
        """An operator's control written by compare-and-swap (as the admin API does)."""
        data, _revision = self.stored[rollout_id]
        updated = request_control(decode_record(data), control, self.clock.now())
        self.revision += 1
        self.stored[rollout_id] = (encode_record(updated), self.revision)

    # -- running ----------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Jump the clock to the sooner of ``seconds`` and the next thing that happens."""
        if self.clock.now() > self.deadline:
            raise AssertionError("the rollout did not end in simulated time")
        now = self.clock.now()
        upcoming = [at for at, _ in self.schedule if at > now]
        upcoming += [
            born + self.start_delay_s
            for born in self.born.values()
            if born + self.start_delay_s > now
        ]
        target = min([now + seconds, *upcoming])
        self.clock.advance(max(target - now, 0.01))
        due = [item for item in self.schedule if item[0] <= self.clock.now()]
        for item in due:
            self.schedule.remove(item)
            item[1](self)
        await asyncio.sleep(0)

    def runner(self) -> RolloutRunner:
        return RolloutRunner(
            self, _FleetFacade(self), self.clock, RunnerSettings(5.0, 1.0), sleeper=self.sleep
        )

    async def run(self, record: RolloutRecord, limit_s: float = 7200.0) -> RolloutRecord:
        """Save ``record`` and run it to the end, resuming after every simulated crash."""
        if record.rollout_id not in self.stored:
            self.revision += 1
            self.stored[record.rollout_id] = (encode_record(record), self.revision)
        self.deadline = self.clock.now() + limit_s
        resumed = False
        while True:
            current, revision = await self.load(record)
            try:
                return await self.runner().run(current, revision, resumed)
            except Crash:
                self.crashes += 1
                resumed = True

    @property
    def last(self) -> RolloutRecord:
        return self.commits[-1]

    def splits_of(self, version: str) -> list[float]:
        return [split.get(version, 0.0) for _, split in self.split_history]

    def event_types(self) -> list[str]:
        return [e.type for e in self.events]


class _FleetFacade:
    """The world seen through the RolloutFleet Protocol."""

    def __init__(self, world: World) -> None:
        self.world = world

    def instances(self, record: RolloutRecord) -> tuple[InstanceView, ...]:
        return self.world.instances_view()

    def window(
        self, record: RolloutRecord, version: str, since: float, now: float
    ) -> Window | None:
        return self.world.window(version, since, now)

    async def start_instances(self, record: RolloutRecord, action: StartInstances) -> None:
        await self.world.start(record, action)

    async def set_split(self, record: RolloutRecord, action: SetSplit) -> None:
        await self.world.set_split(record, action)

    async def stop_instances(self, record: RolloutRecord, action: StopInstances) -> None:
        await self.world.stop(record, action)

    async def run_checks(self, record: RolloutRecord, action: RunChecks) -> CheckReport:
        return await self.world.checks(record, action)
