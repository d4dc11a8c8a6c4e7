"""The agent's session with the coordinators: connect, register, report deltas.

Written against ``AgentEndpoint`` (``agent.stream.endpoint``), so it runs with the real
agent or with a fake.

- Connect to the configured coordinators in turn; a follower's NotLeader names the leader,
  which is tried next at once. A failed coordinator is followed by the next one of the
  round at once (with a little jitter); only a round in which every coordinator failed
  backs off, exponentially in rounds, with jitter (tenacity), reset after every session
  that registered. Register names the leader this agent just lost, so a follower that
  still names it holds the call until the next leader is elected (failover in about the
  time of an election, not of a backoff). Having lost the leader, the agent registers
  with every coordinator at once: each follower holds its call, the one elected answers
  Registered the moment it leads, and the others are cancelled (no redirect, no new
  connection, when a thousand agents move at once).
- Register says the agent's stream schema and Registered the coordinator's
  (``common.schema``): a coordinator more than one schema away is left, with an error.
- After every (re)connect, Register carries the FULL state; then StatusReports carry only
  what changed (batched, at most one per report interval, at least one per heartbeat),
  with the acknowledgements and results of the commands run (``CommandQueue``).
- Disconnected, the session does nothing to the agent: containers and data plane stay as
  they are (static stability) until a coordinator is back and reconciles.
- The TLS files are read and checked once (``ClientCertificates``); a reload (SIGHUP)
  reads them again for the next connection, and the open stream keeps its own.
- One channel per coordinator stays connected (``WarmChannels``): once registered, the
  agent connects to every coordinator, so a failover opens a new stream on a connection
  whose TLS handshake is long done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from agent.stream.channels import WarmChannels
from agent.stream.command_queue import CommandQueue
from agent.stream.endpoint import AgentEndpoint, ChangeBatch
from common.errors import FailedPrecondition
from common.gen.landlord.v1 import agent_pb2, agent_pb2_grpc
from common.proto_values import duration_from_pb
from common.schema import check_stream_peer, peer_schema
from common.stream_convert import registration_to_pb, report_to_pb
from common.stream_messages import AgentReport
from common.transport import ClientCertificates, TlsSettings

__all__ = ["CoordinatorStream", "StreamSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSettings:
    coordinators: tuple[str, ...]
    tls: TlsSettings = field(default_factory=TlsSettings)
    backoff_initial: float = 0.2
    backoff_max: float = 5.0
    report_interval: float = 1.0
    """Until the coordinator says otherwise in Registered."""
    heartbeat_interval: float = 10.0
    register_timeout: float = 20.0
    """Seconds to wait for the answer to Register (a follower holds one up to 15 s while no
    leader it can name is elected); past it the call is dropped and the agent tries again,
    so a call lost with a coordinator that went away mid-answer does not hang the agent."""


ROUND_STEP = 0.05
"""Most seconds between two coordinators of one round (jitter, so agents spread)."""

_OPERATOR_MUST_ACT = frozenset({
    grpc.StatusCode.FAILED_PRECONDITION,  # e.g. a coordinator too many releases away
    grpc.StatusCode.UNAUTHENTICATED,  # this agent's certificate: revoked, expired, untrusted
    grpc.StatusCode.PERMISSION_DENIED,  # its certificate names another host
})


class Redirected(Exception):
    """A follower named the leader; try it now."""


class Disconnected(Exception):
    """The coordinator could not be reached or the stream broke."""


class CoordinatorStream:
    def __init__(self, endpoint: AgentEndpoint, settings: StreamSettings,
                 certificates: ClientCertificates | None = None) -> None:
        if not settings.coordinators:
            raise ValueError("at least one coordinator address is needed")
        self.endpoint = endpoint
        self.settings = settings
        self.connected = asyncio.Event()
        self.coordinator_id = ""
        self.target = settings.coordinators[0]
        self._next_index = 0
        self._preferred = ""
        self._leader_target = ""
        """The address believed to lead: the one registered with, or redirected to."""
        self.unreachable_leader = ""
        """The leader address last lost or not reached (sent in Register, see proto)."""
        self._report_interval = settings.report_interval
        self._heartbeat_interval = settings.heartbeat_interval
        self._sequence = 0
        self.commands = CommandQueue(endpoint)
        self._host_id = ""
        self.sessions = 0
        self.certificates = certificates or (ClientCertificates(settings.tls)
                                             if settings.tls.enabled else None)
        """The TLS files new connections use, read at start or at the last reload (the
        daemon's SIGHUP, agent/daemon.py); an open stream keeps its own TLS session."""
        self.channels = WarmChannels(settings.tls, self.certificates)

    async def run(self) -> None:
        """Keep a session with the leader for ever (cancel to stop)."""
        try:
            await self._run()
        finally:
            await asyncio.shield(self.channels.close())

    async def _run(self) -> None:
        while True:
            retrying = AsyncRetrying(wait=self._wait_policy(), reraise=True,
                                     retry=retry_if_exception_type((Redirected, Disconnected)))
            await retrying(self._session)

    def _wait_policy(self) -> Callable[[RetryCallState], float]:
        """How long to wait before the next attempt: none after a redirect; a moment
        before the next coordinator of a round; exponential backoff (with jitter) only
        after a whole round of coordinators failed, counted in rounds, not attempts."""
        initial, most = self.settings.backoff_initial, self.settings.backoff_max
        count = len(self.settings.coordinators)
        failures = 0

        def wait(state: RetryCallState) -> float:
            nonlocal failures
            failed = state.outcome.exception() if state.outcome else None
            if isinstance(failed, Redirected):
                return 0.0
            failures += 1
            if failures % count:
                return random.uniform(0.0, ROUND_STEP)
            rounds = failures // count
            return float(min(most, initial * 2 ** (rounds - 1)) + random.uniform(0.0, initial))

        return wait

    @property
    def reports_sent(self) -> int:
        return self._sequence

    @property
    def commands_run(self) -> int:
        return self.commands.commands_run

    def _pick_target(self) -> str:
        if self._preferred:
            target, self._preferred = self._preferred, ""
            self._leader_target = target
            return target
        target = self.settings.coordinators[self._next_index % len(self.settings.coordinators)]
        self._next_index += 1
        return target

    async def _session(self) -> None:
        """One session; returns normally only after a registered session ended."""
        if self.unreachable_leader and not self._preferred:
            self.target, call, first = await self._open_any()
        else:
            self.target = self._pick_target()
            call, first = await self._open(self.target, self._register())
        try:
            body = first.WhichOneof("body")
            if body == "not_leader":
                self._redirect(first.not_leader.leader_address)
            if body != "registered":
                raise Disconnected(f"{self.target} answered {body} to Register")
            self._registered(first.registered)
            await self.channels.warm(self.settings.coordinators)
            await self._converse(call)
            self._lost(self.target)  # the leader's stream ended (a step-down redirects)
        finally:
            self.connected.clear()
            call.cancel()
        self._next_index -= 1  # reconnect to the same coordinator first

    async def _open(self, target: str, register: agent_pb2.Register) -> tuple[Any, Any]:
        """A Session call to ``target`` with ``register`` sent: (the call, its first
        answer); Disconnected when it failed or ended."""
        call = agent_pb2_grpc.AgentStreamStub(await self.channels.get(target)).Session()
        try:
            async with asyncio.timeout(self.settings.register_timeout):
                await call.write(agent_pb2.AgentMessage(register=register))
                first = await call.read()
        except grpc.aio.AioRpcError as exc:
            self._lost(target)
            raise self._failed(exc, target) from None
        except TimeoutError:
            call.cancel()
            self._lost(target)
            raise Disconnected(f"{target} did not answer Register within "
                               f"{self.settings.register_timeout:g} s") from None
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF:
            self._lost(target)
            raise Disconnected(f"{target} closed the stream")
        return call, first

    async def _open_any(self) -> tuple[str, Any, Any]:
        """The leader was lost: Register with every coordinator at once, each on its warm
        channel. Followers hold the call until a leader is elected, so the new leader
        answers Registered as soon as it leads (and the lost one at once, if it was only
        the stream that broke); the first Registered wins and the other calls are
        cancelled. A NotLeader naming one of these coordinators is waited out; one naming
        another address is followed when no call registered."""
        targets = tuple(dict.fromkeys(self.settings.coordinators))
        register = self._register()
        tasks = {asyncio.create_task(self._open(t, register)): t for t in targets}
        winner: tuple[str, Any, Any] | None = None
        redirect, failure = "", ""
        try:
            pending = set(tasks)
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        failure = str(task.exception())
                        continue
                    call, first = task.result()
                    body = first.WhichOneof("body")
                    if body == "registered" and winner is None:
                        winner = (tasks[task], call, first)
                        continue
                    call.cancel()
                    leader = first.not_leader.leader_address if body == "not_leader" else ""
                    if leader and leader not in targets:
                        redirect = leader
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    call, _ = await task
                    if winner is None or call is not winner[1]:
                        call.cancel()
        if winner is not None:
            return winner
        if redirect:
            self._preferred = redirect
            raise Redirected(redirect)
        raise Disconnected(f"no coordinator registered this agent (last: {failure})")

    def _lost(self, target: str) -> None:
        """``target`` did not answer or its stream broke: if it was the leader, say so in
        the next Register, so a follower that still names it waits for the next leader."""
        if target == self._leader_target:
            self.unreachable_leader = target

    def _failed(self, exc: grpc.aio.AioRpcError, target: str) -> Disconnected:
        """The stream failed; a refusal only the operator can fix is logged as an error."""
        if exc.code() in _OPERATOR_MUST_ACT:
            log.error("coordinator %s refused this agent: %s %s", target,
                      exc.code().name, exc.details())
        return Disconnected(f"{target}: {exc.code().name} {exc.details()}")

    def _redirect(self, leader: str) -> None:
        if leader and leader != self.target:
            self._preferred = leader
            raise Redirected(leader)
        raise Disconnected(f"{self.target} does not lead and knows no leader")

    def _registered(self, pb: agent_pb2.Registered) -> None:
        try:
            check_stream_peer(peer_schema(pb.schema), peer_role="coordinator", role="agent")
        except FailedPrecondition as exc:
            log.error("leaving coordinator %s at %s: %s", pb.coordinator_id, self.target, exc)
            raise Disconnected(str(exc)) from None
        self.coordinator_id = pb.coordinator_id
        self._leader_target, self.unreachable_leader = self.target, ""
        self._report_interval = duration_from_pb(pb.report_interval) or self._report_interval
        self._heartbeat_interval = (duration_from_pb(pb.heartbeat_interval)
                                    or self._heartbeat_interval)
        self.sessions += 1
        self.connected.set()
        log.info("registered with coordinator %s at %s", self.coordinator_id, self.target)

    async def _converse(self, call: Any) -> None:
        tasks = [
            asyncio.create_task(self._send_reports(call)),
            asyncio.create_task(self._receive(call)),
            asyncio.create_task(self.commands.run()),
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
            self.commands.reset()
            call.cancel()

    async def _receive(self, call: Any) -> None:
        while True:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise self._failed(exc, self.target) from None
            if message is grpc.aio.EOF:
                raise Disconnected("coordinator ended the stream")
            body = message.WhichOneof("body")
            if body == "not_leader":
                self._redirect(message.not_leader.leader_address)
            if body == "command":
                self.commands.offer(message.command)

    async def _send_reports(self, call: Any) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            due = last + self._heartbeat_interval - loop.time()
            waiter = asyncio.ensure_future(self.endpoint.next_changes(max(0.0, due)))
            woken = asyncio.ensure_future(self.commands.done.wait())
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
                batch = await self.endpoint.next_changes(0.0)
            self.commands.done.clear()
            quiet = batch.empty and not self.commands.has_news
            if quiet and loop.time() - last < self._heartbeat_interval:
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
        registration = self.endpoint.registration()
        self._host_id = registration.host_id
        message = registration_to_pb(registration)
        message.unreachable_leader = self.unreachable_leader
        return message

    def _report(self, batch: ChangeBatch) -> agent_pb2.StatusReport:
        self._sequence += 1
        acks, results = self.commands.take()
        report = AgentReport(
            sequence=self._sequence, time=time.time(), changed=tuple(batch.changed),
            removed_instance_ids=tuple(batch.removed), events=tuple(batch.events),
            windows=tuple(batch.windows), host_usage=batch.host_usage,
            acked_command_ids=acks, results=results, output=self.commands.outputs.take(),
            wake_units=tuple(batch.wake_units))
        return report_to_pb(report, self._host_id)
