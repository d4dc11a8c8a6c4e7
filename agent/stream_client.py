"""The agent's side of the coordinator stream: register, report deltas, run commands.

Written against ``AgentPort`` (what it needs from the agent: identity and images, a full
snapshot of its instances, a feed of changes, and one handler for commands), so it runs
with the real agent service or with a fake.

- Connect to the configured coordinators in turn; a follower's NotLeader names the leader,
  which is tried next at once; any other failure waits with exponential backoff and jitter
  (tenacity), reset after every session that registered.
- After every (re)connect, Register carries the FULL state; then StatusReports carry only
  what changed (batched, at most one per report interval, at least one per heartbeat).
- Commands run one at a time in arrival order; their ids are acknowledged, with results,
  in the next report. A command already queued is not queued twice. RunCheck (a command
  in a container, bounded by its own timeout) runs beside them, so it holds nothing up;
  its result carries the exit code and output.
- Disconnected, the client does nothing to the agent: containers and data plane stay as
  they are (static stability) until a coordinator is back and reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import psutil
from google.protobuf import duration_pb2, timestamp_pb2
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from common.errors import LandlordError
from common.gc_kinds import GcKind
from common.gen.landlord.v1 import agent_pb2, agent_pb2_grpc, types_pb2
from common.latency import LatencySketch
from common.proto_values import gc_kinds_from_pb
from common.resources import Resources
from common.stream_messages import ReportedEvent, RouteServer
from common.transport import TlsSettings, create_channel

__all__ = [
    "AgentCommand", "AgentPort", "ChangeBatch", "CollectGarbage", "CommandOutput",
    "CoordinatorStream", "DrainInstance", "HealthParams", "HostIdentity", "InstanceReport",
    "ReportedEvent", "RouteServer", "RunCheck", "SetRoute", "SetWeights", "StartInstance",
    "StopInstance", "StreamSettings", "WindowReport", "measure_capacity",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostIdentity:
    host_id: str
    building: str
    address: str
    capacity: Resources
    labels: Mapping[str, str] = field(default_factory=dict)
    enforceable: tuple[str, ...] = ()
    agent_version: str = ""


@dataclass(frozen=True)
class InstanceReport:
    instance_id: str
    apartment: str
    unit: str
    version: str
    slot: str
    state: str
    """common.lifecycle.InstanceState value."""
    health_score: float = 0.0
    address: str = ""
    port: int = 0
    restarts: int = 0
    reason: str = ""
    usage: Mapping[str, float] = field(default_factory=dict)
    started_at: float = 0.0
    last_activity: float = 0.0
    unenforced_limits: tuple[str, ...] = ()


@dataclass(frozen=True)
class WindowReport:
    apartment: str
    unit: str
    version: str
    instance_id: str
    start: float
    end: float
    requests: int
    errors: int
    latency: LatencySketch | None = None


@dataclass
class ChangeBatch:
    """What changed since the previous batch."""

    changed: list[InstanceReport] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    events: list[ReportedEvent] = field(default_factory=list)
    windows: list[WindowReport] = field(default_factory=list)
    host_usage: Mapping[str, float] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.changed or self.removed or self.events or self.windows)


@dataclass(frozen=True)
class HealthParams:
    path: str
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int
    warmup: float


@dataclass(frozen=True)
class StartInstance:
    instance_id: str
    apartment: str
    unit: str
    version: str
    slot: str
    image: str
    port: int
    """The host port assigned to this instance (it listens on the host address there)."""
    command: tuple[str, ...]
    env: Mapping[str, str]
    health: HealthParams
    resources: Resources
    service_port: int = 0
    state_mode: str = "none"
    idle_timeout: float = 0.0
    state_from_instance_id: str = ""


@dataclass(frozen=True)
class StopInstance:
    instance_id: str
    grace: float
    drain: bool


@dataclass(frozen=True)
class SetRoute:
    """The whole desired data plane of one unit on this host."""

    apartment: str
    unit: str
    service_port: int
    health_path: str
    servers: tuple[RouteServer, ...]


@dataclass(frozen=True)
class SetWeights:
    apartment: str
    unit: str
    weights: Mapping[str, int]


@dataclass(frozen=True)
class DrainInstance:
    apartment: str
    unit: str
    instance_id: str
    timeout: float


@dataclass(frozen=True)
class CollectGarbage:
    kinds: tuple[GcKind, ...]
    """Empty: every kind."""


@dataclass(frozen=True)
class RunCheck:
    """Run ``argv`` in the instance's container; the outcome is the command's result."""

    instance_id: str
    argv: tuple[str, ...]
    timeout: float
    """Seconds; 0 = the agent's default."""


@dataclass(frozen=True)
class CommandOutput:
    """What a command produced besides success (RunCheck: exit code and output)."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    timed_out: bool = False
    error: str = ""
    """Not empty: the command did not complete (the result is not ok)."""


AgentCommand = (StartInstance | StopInstance | SetRoute | SetWeights | DrainInstance
                | CollectGarbage | RunCheck)


class AgentPort(Protocol):
    """What the stream needs from the agent."""

    def identity(self) -> HostIdentity: ...

    def images(self) -> Sequence[str]: ...

    def snapshot(self) -> Sequence[InstanceReport]:
        """Every instance the agent runs now (sent in full after every connect)."""
        ...

    async def next_changes(self, timeout: float) -> ChangeBatch:
        """Changes since the last call; waits up to ``timeout`` for the first one.

        Cancelling the wait must lose nothing (changes stay for the next call)."""
        ...

    async def execute(self, command: AgentCommand) -> CommandOutput | None:
        """Carry out one command (idempotent); raise to report a failure. RunCheck returns
        its output."""
        ...


@dataclass(frozen=True)
class StreamSettings:
    coordinators: tuple[str, ...]
    tls: TlsSettings = field(default_factory=TlsSettings)
    backoff_initial: float = 0.2
    backoff_max: float = 5.0
    report_interval: float = 1.0
    """Until the coordinator says otherwise in Registered."""
    heartbeat_interval: float = 10.0


def measure_capacity(data_dir: str, reserved: Resources, network_bps: int) -> Resources:
    """Host capacity from psutil (cpu cores, memory, disk of ``data_dir``) minus ``reserved``."""
    total = Resources(
        cpu=float(psutil.cpu_count(logical=True) or 1),
        memory=int(psutil.virtual_memory().total),
        storage=int(psutil.disk_usage(data_dir).total),
        network=network_bps,
    )
    return total.minus(reserved)


class Redirected(Exception):
    """A follower named the leader; try it now."""


class Disconnected(Exception):
    """The coordinator could not be reached or the stream broke."""


class CoordinatorStream:
    def __init__(self, port: AgentPort, settings: StreamSettings) -> None:
        if not settings.coordinators:
            raise ValueError("at least one coordinator address is needed")
        self.port = port
        self.settings = settings
        self.connected = asyncio.Event()
        self.coordinator_id = ""
        self.target = settings.coordinators[0]
        self._next_index = 0
        self._preferred = ""
        self._report_interval = settings.report_interval
        self._heartbeat_interval = settings.heartbeat_interval
        self._sequence = 0
        self._acks: list[str] = []
        self._results: list[agent_pb2.CommandResult] = []
        self._queued: set[str] = set()
        self._wake = asyncio.Event()
        self.sessions = 0
        self.commands_run = 0

    async def run(self) -> None:
        """Keep a session with the leader for ever (cancel to stop)."""
        initial = self.settings.backoff_initial
        backoff = wait_exponential(multiplier=initial, max=self.settings.backoff_max) + \
            wait_random(0, initial)

        def wait(state: RetryCallState) -> float:
            failed = state.outcome.exception() if state.outcome else None
            return 0.0 if isinstance(failed, Redirected) else float(backoff(state))

        while True:
            retrying = AsyncRetrying(wait=wait, reraise=True,
                                     retry=retry_if_exception_type((Redirected, Disconnected)))
            await retrying(self._session)

    @property
    def reports_sent(self) -> int:
        return self._sequence

    def _pick_target(self) -> str:
        if self._preferred:
            target, self._preferred = self._preferred, ""
            return target
        target = self.settings.coordinators[self._next_index % len(self.settings.coordinators)]
        self._next_index += 1
        return target

    async def _session(self) -> None:
        """One session; returns normally only after a registered session ended."""
        self.target = self._pick_target()
        channel = create_channel(self.target, self.settings.tls)
        try:
            call = agent_pb2_grpc.AgentStreamStub(channel).Session()
            try:
                await call.write(agent_pb2.AgentMessage(register=self._register()))
                first = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise Disconnected(f"{self.target}: {exc.code().name} {exc.details()}") from None
            if first is grpc.aio.EOF:
                raise Disconnected(f"{self.target} closed the stream")
            body = first.WhichOneof("body")
            if body == "not_leader":
                self._redirect(first.not_leader.leader_address)
            if body != "registered":
                raise Disconnected(f"{self.target} answered {body} to Register")
            self._registered(first.registered)
            await self._converse(call)
        finally:
            self.connected.clear()
            await channel.close(None)
        self._next_index -= 1  # reconnect to the same coordinator first

    def _redirect(self, leader: str) -> None:
        if leader and leader != self.target:
            self._preferred = leader
            raise Redirected(leader)
        raise Disconnected(f"{self.target} does not lead and knows no leader")

    def _registered(self, pb: agent_pb2.Registered) -> None:
        self.coordinator_id = pb.coordinator_id
        if pb.report_interval.seconds or pb.report_interval.nanos:
            self._report_interval = pb.report_interval.ToTimedelta().total_seconds()
        if pb.heartbeat_interval.seconds or pb.heartbeat_interval.nanos:
            self._heartbeat_interval = pb.heartbeat_interval.ToTimedelta().total_seconds()
        self.sessions += 1
        self.connected.set()
        log.info("registered with coordinator %s at %s", self.coordinator_id, self.target)

    async def _converse(self, call: Any) -> None:
        commands: asyncio.Queue[tuple[str, AgentCommand]] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._send_reports(call)),
            asyncio.create_task(self._receive(call, commands)),
            asyncio.create_task(self._execute(commands)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = task.exception()
                if isinstance(failure, Redirected):
                    raise failure
                if failure is not None and not isinstance(failure, Disconnected):
                    log.warning("stream to %s failed: %r", self.target, failure)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._queued.clear()
            call.cancel()

    async def _receive(self, call: Any, commands: asyncio.Queue[tuple[str, AgentCommand]]
                       ) -> None:
        while True:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise Disconnected(f"{exc.code().name} {exc.details()}") from None
            if message is grpc.aio.EOF:
                raise Disconnected("coordinator ended the stream")
            body = message.WhichOneof("body")
            if body == "not_leader":
                self._redirect(message.not_leader.leader_address)
            if body != "command":
                continue
            command_id = message.command.command_id
            if command_id in self._queued:
                continue
            try:
                command = command_from_pb(message.command)
            except (ValueError, LandlordError) as exc:
                self._results.append(agent_pb2.CommandResult(command_id=command_id, ok=False,
                                                             error=str(exc)))
                continue
            self._queued.add(command_id)
            commands.put_nowait((command_id, command))

    async def _execute(self, commands: asyncio.Queue[tuple[str, AgentCommand]]) -> None:
        checks: set[asyncio.Task[None]] = set()
        try:
            while True:
                command_id, command = await commands.get()
                if isinstance(command, RunCheck):
                    task = asyncio.create_task(self._run(command_id, command))
                    checks.add(task)
                    task.add_done_callback(checks.discard)
                else:
                    await self._run(command_id, command)
        finally:
            for task in checks:
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)

    async def _run(self, command_id: str, command: AgentCommand) -> None:
        try:
            output = await self.port.execute(command)
            result = _result(command_id, output)
        except Exception as exc:  # reported to the coordinator, not fatal to the stream
            log.warning("command %s failed: %s", command_id, exc)
            result = agent_pb2.CommandResult(command_id=command_id, ok=False, error=str(exc))
        self._queued.discard(command_id)
        self.commands_run += 1
        self._acks.append(command_id)
        self._results.append(result)
        self._wake.set()

    async def _send_reports(self, call: Any) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            due = last + self._heartbeat_interval - loop.time()
            waiter = asyncio.ensure_future(self.port.next_changes(max(0.0, due)))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                done, _ = await asyncio.wait({waiter, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
            if waiter in done:
                batch = waiter.result()
            else:  # a command finished: report its result now, with whatever changed
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
                batch = await self.port.next_changes(0.0)
            self._wake.clear()
            if batch.empty and not self._acks and loop.time() - last < self._heartbeat_interval:
                continue
            try:
                await call.write(agent_pb2.AgentMessage(report=self._report(batch)))
            except grpc.aio.AioRpcError as exc:
                raise Disconnected(f"{exc.code().name} {exc.details()}") from None
            except asyncio.InvalidStateError:  # the call ended while this report was built
                raise Disconnected("the stream ended") from None
            last = loop.time()
            # batch further changes: at most one report per interval
            await asyncio.sleep(self._report_interval)

    def _register(self) -> agent_pb2.Register:
        me = self.port.identity()
        return agent_pb2.Register(
            host_id=me.host_id, building=me.building, address=me.address,
            capacity=_resources(me.capacity), labels=dict(me.labels),
            enforceable=list(me.enforceable), agent_version=me.agent_version,
            instances=[_instance(i, me.host_id) for i in self.port.snapshot()],
            images=list(self.port.images()),
        )

    def _report(self, batch: ChangeBatch) -> agent_pb2.StatusReport:
        self._sequence += 1
        host_id = self.port.identity().host_id
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        report = agent_pb2.StatusReport(
            sequence=self._sequence, time=now,
            changed=[_instance(i, host_id) for i in batch.changed],
            removed_instance_ids=batch.removed,
            events=[_event(e, host_id) for e in batch.events],
            windows=[_window(w, host_id) for w in batch.windows],
            host_usage=types_pb2.ResourceUsage(
                cpu_cores=batch.host_usage.get("cpu_cores", 0.0),
                memory_bytes=int(batch.host_usage.get("memory_bytes", 0))),
            acked_command_ids=self._acks, results=self._results,
        )
        self._acks, self._results = [], []
        return report


def _ts(epoch: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if epoch:
        ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def _secs(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _resources(r: Resources) -> types_pb2.Resources:
    return types_pb2.Resources(cpu_millis=round(r.cpu * 1000), memory_bytes=r.memory,
                               storage_bytes=r.storage, network_bps=r.network)


_STATES = {name: value for value, name in enumerate(
    ["", "created", "initializing", "ready", "running", "paused", "stopping", "stopped", "error"])}
_SLOTS = {"blue": types_pb2.SLOT_BLUE, "green": types_pb2.SLOT_GREEN}
_SLOT_NAMES = {v: k for k, v in _SLOTS.items()}
_MODES = {types_pb2.STATE_MODE_SHARED: "shared", types_pb2.STATE_MODE_SNAPSHOT: "snapshot"}


def _instance(i: InstanceReport, host_id: str) -> types_pb2.InstanceStatus:
    u = i.usage
    return types_pb2.InstanceStatus(
        instance_id=i.instance_id, host_id=host_id, apartment=i.apartment, unit=i.unit,
        version=i.version, slot=_SLOTS.get(i.slot, types_pb2.SLOT_UNSPECIFIED),
        state=_STATES.get(i.state, 0),  # type: ignore[arg-type]
        health_score=i.health_score, address=i.address, port=i.port,
        usage=types_pb2.ResourceUsage(
            cpu_cores=u.get("cpu_cores", 0.0), memory_bytes=int(u.get("memory_bytes", 0)),
            storage_bytes=int(u.get("storage_bytes", 0)),
            network_tx_bps=int(u.get("network_tx_bps", 0)), pids=int(u.get("pids", 0))),
        started_at=_ts(i.started_at), last_activity=_ts(i.last_activity),
        restarts=i.restarts, reason=i.reason, unenforced_limits=list(i.unenforced_limits),
    )


def _event(e: ReportedEvent, host_id: str) -> types_pb2.Event:
    return types_pb2.Event(type=e.type, time=_ts(e.time), apartment=e.apartment, unit=e.unit,
                           version=e.version, host_id=host_id, instance_id=e.instance_id,
                           message=e.message, details=dict(e.details))


def _window(w: WindowReport, host_id: str) -> types_pb2.MetricsWindow:
    pb = types_pb2.MetricsWindow(
        apartment=w.apartment, unit=w.unit, version=w.version, instance_id=w.instance_id,
        host_id=host_id, start=_ts(w.start), end=_ts(w.end), requests=w.requests,
        errors=w.errors)
    if w.latency is not None and w.latency.count:
        data = w.latency.to_dict()
        key, buckets = 0, {}
        for delta, count in zip(data["k"], data["c"], strict=True):  # type: ignore[call-overload]
            key += delta
            buckets[key] = count
        pb.latency.CopyFrom(types_pb2.LatencySummary(
            relative_accuracy=w.latency.relative_accuracy, positive_buckets=buckets,
            zero_count=int(data["z"]), count=w.latency.count,  # type: ignore[call-overload]
            sum_ms=w.latency.sum, min_ms=w.latency.min or 0.0, max_ms=w.latency.max or 0.0))
    return pb


def _result(command_id: str, output: CommandOutput | None) -> agent_pb2.CommandResult:
    if output is None:
        return agent_pb2.CommandResult(command_id=command_id, ok=True)
    return agent_pb2.CommandResult(
        command_id=command_id, ok=not output.error, error=output.error,
        exit_code=output.exit_code, stdout=output.stdout, stderr=output.stderr,
        output_truncated=output.truncated, timed_out=output.timed_out)


def command_from_pb(pb: agent_pb2.Command) -> AgentCommand:
    """The dataclass for a Command message; ValueError for one this agent does not know."""
    kind = pb.WhichOneof("action")
    if kind == "start":
        s, spec = pb.start, pb.start.spec
        h = spec.health
        return StartInstance(
            instance_id=s.instance_id, apartment=spec.apartment, unit=spec.unit,
            version=s.version, slot=_SLOT_NAMES.get(s.slot, "blue"), image=spec.image,
            port=s.port, command=tuple(spec.command), env=dict(spec.env),
            health=HealthParams(h.path or "/health", _secs(h.interval), _secs(h.timeout),
                                h.healthy_threshold, h.unhealthy_threshold, _secs(h.warmup)),
            resources=Resources(cpu=spec.resources.cpu_millis / 1000,
                                memory=spec.resources.memory_bytes,
                                storage=spec.resources.storage_bytes,
                                network=spec.resources.network_bps),
            service_port=spec.service_port, state_mode=_MODES.get(spec.state_mode, "none"),
            idle_timeout=_secs(spec.idle_timeout),
            state_from_instance_id=s.state_from_instance_id,
        )
    if kind == "stop":
        return StopInstance(pb.stop.instance_id, _secs(pb.stop.grace), pb.stop.drain)
    if kind == "route":
        r = pb.route
        return SetRoute(r.apartment, r.unit, r.service_port, r.health_path, tuple(
            RouteServer(s.server, s.version, s.address, s.port, s.weight, s.state)
            for s in r.servers))
    if kind == "weights":
        return SetWeights(pb.weights.apartment, pb.weights.unit, dict(pb.weights.weights))
    if kind == "drain":
        d = pb.drain
        return DrainInstance(d.apartment, d.unit, d.instance_id, _secs(d.timeout))
    if kind == "gc":
        return CollectGarbage(gc_kinds_from_pb(pb.gc.gc_kinds))
    if kind == "run_check":
        c = pb.run_check
        return RunCheck(c.instance_id, tuple(c.argv), _secs(c.timeout))
    raise ValueError(f"unknown command {kind!r}")
