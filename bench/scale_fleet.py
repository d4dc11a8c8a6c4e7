"""Many simulated agents in one process, cheaply: the coordinator scale bench's fleet.

Each simulated host keeps its own gRPC stream (its own channel, so its own mutual-TLS
connection and certificate) and speaks the agent stream protocol for real: Register with
its full state after every connect, commands run and acknowledged with their results,
then reports at the agent's cadence: news (instances started or stopped, results) within
the second; the usage of its instances every usage interval (5 s, the agent's
``AdapterSettings.usage_interval``), all in one report, as the agent sends them; a host with
nothing to say a heartbeat every 10 s. What makes it cheap, so 5,000 hosts fit beside the
coordinator on two cores (the product's session, ``agent.stream.session``, costs about
0.35 ms of CPU per host and second in Python, most of it per-report tasks and waits):

- one ticker per process writes every host's report, spread over the second in 20 slices
  (and the usage reports over the usage interval), instead of a report loop per host;
- the usage reports are computed once and replayed: every instance's status is serialised
  when it starts, in ``VARIANTS`` usage variants, and a report is the bytes of a few of them
  joined (protobuf merges concatenated messages: the repeated ``changed`` fields append)
  plus a small tail with the sequence number and the time;
- a report with news (started or stopped instances, command results) is built from the
  same converters the agent uses (``common.stream_convert``).

What the coordinator sees is what real agents send; only the agents' CPU is smaller. The
product's own session still runs in the bench for the probe (report-to-admin visibility)
and in ``bench/failover.py`` (where its reconnect is what is measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import grpc

from agent.stream.adapter import AdapterSettings
from agent.stream.session import StreamSettings
from common.errors import LandlordError
from common.gen.landlord.v1 import agent_pb2
from common.resources import Resources
from common.stream_commands import ExecStream, ReadLogs, RunCheck, StartInstance, StopInstance
from common.stream_convert import command_from_pb, registration_to_pb, report_to_pb
from common.stream_messages import AgentReport, CommandResult, ObservedInstance, Registration
from common.transport import TlsSettings, create_channel

__all__ = ["USAGE_INTERVAL", "SimulatedFleet", "identity", "worker"]

log = logging.getLogger(__name__)

SESSION = "/landlord.v1.AgentStream/Session"
SLICES = 20
"""A second's reports are written in this many slices (every 50 ms)."""
HEARTBEAT = round(StreamSettings.heartbeat_interval)
"""Seconds between the reports of a host with nothing to say (the agent's default)."""
USAGE_INTERVAL = round(AdapterSettings.usage_interval)
"""Seconds between a host's usage reports (the agent's default)."""
VARIANTS = 4
"""Usage variants serialised per instance (replayed in turn)."""


def identity(index: int, building: str, cpu: float = 64.0) -> Registration:
    """Simulated host ``index``: its id, address (127.1.x.y, never contacted) and capacity."""
    address = f"127.1.{index // 250}.{index % 250 + 1}"
    return Registration(f"h{index:05d}", building, address,
                        Resources(cpu=cpu, memory=256 << 30, storage=1 << 40), {}, (), "bench")


def worker(target: str, hosts: list[tuple[int, str, TlsSettings | None]], image: str,
           changed: int, running: Any, reports: Any, stop: Any) -> None:
    """One process's simulated hosts, until ``stop`` is set (counts shared with the bench).
    ``changed``: the percentage of a host's instances whose usage changed between two of
    its usage reports."""
    fleet = SimulatedFleet(target, [SimulatedHost(identity(i, b), tls, image,
                                                  phase=i % HEARTBEAT)
                                    for i, b, tls in hosts], changed)

    async def main() -> None:
        task = asyncio.create_task(fleet.run())
        while not stop.is_set() and not task.done():
            running.value, reports.value = fleet.running, fleet.reports_sent
            await asyncio.sleep(0.5)
        if task.done():  # the fleet failed: say so (the bench sees its hosts go quiet)
            task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def _framed(report: agent_pb2.StatusReport) -> bytes:
    return agent_pb2.AgentMessage(report=report).SerializeToString()


@dataclass
class SimulatedHost:
    """One simulated agent: its stream, instances and what its next report must carry."""

    identity: Registration
    tls: TlsSettings | None
    image: str
    phase: int = 0
    """This host's second of the heartbeat interval (its heartbeat, when it has nothing
    to say), and of the usage interval (modulo its length: its usage reports)."""
    instances: dict[str, ObservedInstance] = field(default_factory=dict)
    pieces: dict[str, list[bytes]] = field(default_factory=dict)
    """Per instance: its status with each usage variant, framed as an AgentMessage."""
    order: list[str] = field(default_factory=list)
    """Instance ids, in the order the usage reports rotate through them."""
    started: dict[str, ObservedInstance] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    call: Any = None
    writing: bool = False
    """A report is on its way (the next one waits: a stream the coordinator is not reading
    holds up only its own host)."""
    sequence: int = 0
    turn: int = 0

    @property
    def news(self) -> bool:
        return bool(self.started or self.stopped or self.results)

    def register(self) -> bytes:
        registration = replace(self.identity, instances=tuple(self.instances.values()),
                               images=(self.image,))
        return agent_pb2.AgentMessage(register=registration_to_pb(registration)) \
            .SerializeToString()

    def run(self, pb: agent_pb2.Command) -> None:
        """Carry out one command at once: instances appear running, stop at once."""
        try:
            command = command_from_pb(pb).command
        except (ValueError, LandlordError) as exc:
            self.results.append(CommandResult(pb.command_id, ok=False, error=str(exc)))
            return
        if isinstance(command, ReadLogs | ExecStream | RunCheck):
            self.results.append(CommandResult(pb.command_id, ok=False,
                                              error="simulated bench hosts run nothing"))
            return
        if isinstance(command, StartInstance) and command.instance_id not in self.instances:
            report = ObservedInstance(command.instance_id, self.identity.host_id,
                                      command.apartment, command.unit, command.version,
                                      command.slot, "running", 1.0, self.identity.address,
                                      command.port, started_at=time.time())
            self.instances[command.instance_id] = self.started[command.instance_id] = report
            self.pieces[command.instance_id] = [
                _framed(report_to_pb(AgentReport(0, 0.0, changed=(replace(
                    report, usage={"cpu_cores": random.random(),
                                   "memory_bytes": float(random.randrange(1 << 20, 1 << 24))}),
                )), self.identity.host_id)) for _ in range(VARIANTS)]
            self.order.append(command.instance_id)
        elif isinstance(command, StopInstance) and command.instance_id in self.instances:
            del self.instances[command.instance_id], self.pieces[command.instance_id]
            self.started.pop(command.instance_id, None)
            self.order.remove(command.instance_id)
            self.stopped.append(command.instance_id)
        self.results.append(CommandResult(pb.command_id, ok=True))

    def report(self, changed: int) -> bytes:
        """The next report: the news, or the usage of ``changed`` % of the instances
        replayed (each instance in turn)."""
        self.sequence += 1
        if self.news:
            results, self.results = tuple(self.results), []
            report = AgentReport(self.sequence, time.time(),
                                 changed=tuple(self.started.values()),
                                 removed_instance_ids=tuple(self.stopped),
                                 acked_command_ids=tuple(r.command_id for r in results),
                                 results=results)
            self.started, self.stopped = {}, []
            return _framed(report_to_pb(report, self.identity.host_id))
        parts = []
        count = math.ceil(len(self.order) * changed / 100)
        for _ in range(count):
            self.turn += 1
            iid = self.order[self.turn % len(self.order)]
            parts.append(self.pieces[iid][self.turn // len(self.order) % VARIANTS])
        parts.append(_framed(report_to_pb(AgentReport(self.sequence, time.time()),
                                          self.identity.host_id)))
        return b"".join(parts)


class SimulatedFleet:
    """Every host of one process: their sessions and the ticker that writes their reports."""

    def __init__(self, target: str, hosts: list[SimulatedHost], changed: int) -> None:
        self.target = target
        self.hosts = hosts
        self.changed = changed
        self.reports_sent = 0

    @property
    def running(self) -> int:
        return sum(len(h.instances) for h in self.hosts)

    async def run(self) -> None:
        """Every host's session, and the ticker, until cancelled."""
        tasks = [asyncio.create_task(self._ticker())]
        try:
            for host in self.hosts:
                tasks.append(asyncio.create_task(self._session(host)))
                await asyncio.sleep(0.002)  # do not open every stream in the same instant
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _session(self, host: SimulatedHost) -> None:
        """Register, then run the coordinator's commands; reconnect when the stream ends."""
        channel = create_channel(self.target, host.tls)
        session = channel.stream_stream(SESSION, request_serializer=None,
                                        response_deserializer=agent_pb2.CoordinatorMessage
                                        .FromString)
        try:
            while True:
                call = session()
                try:
                    await self._converse(host, call)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
                    pass
                except Exception:  # one host's failure is not the whole fleet's
                    log.exception("simulated host %s failed; reconnecting",
                                  host.identity.host_id)
                finally:
                    host.call = None
                    call.cancel()
                await asyncio.sleep(random.uniform(0.5, 3.0))
        finally:
            await channel.close()

    async def _converse(self, host: SimulatedHost, call: Any) -> None:
        async with asyncio.timeout(20):
            await call.write(host.register())
            first = await call.read()
        if first is grpc.aio.EOF or first.WhichOneof("body") != "registered":
            return
        host.started, host.stopped = {}, []  # Register carried them (results wait)
        host.call = call
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            if message.WhichOneof("body") == "command":
                host.run(message.command)

    async def _ticker(self) -> None:
        """Each host reports in its slice of the second: its news at once, its usage in its
        second of the usage interval, a heartbeat every ``HEARTBEAT`` seconds otherwise."""
        slices = [self.hosts[s::SLICES] for s in range(SLICES)]
        loop = asyncio.get_running_loop()
        due, second = loop.time(), 0
        while True:
            second += 1
            for hosts in slices:
                # a late tick is not made up for (the agent sleeps an interval after each
                # report, so it never sends a burst)
                due = max(due + 1.0 / SLICES, loop.time())
                await asyncio.sleep(due - loop.time())
                for host in hosts:
                    if host.call is None or host.writing:
                        continue
                    reports_usage = bool(host.order and self.changed)
                    usage = reports_usage and second % USAGE_INTERVAL == (
                        host.phase % USAGE_INTERVAL)
                    if not (host.news or usage or (
                            not reports_usage and second % HEARTBEAT == host.phase)):
                        continue  # nothing to say: a heartbeat every HEARTBEAT seconds
                    host.writing = True
                    write = asyncio.ensure_future(host.call.write(
                        host.report(self.changed if usage else 0)))
                    write.add_done_callback(partial(self._written, host))

    def _written(self, host: SimulatedHost, write: asyncio.Future[None]) -> None:
        host.writing = False
        if not write.cancelled() and write.exception() is None:
            self.reports_sent += 1
