"""The AgentStream gRPC service: one long-lived Session per agent.

The first message must be Register. A follower answers NotLeader with the leader's address
and ends the call, so the agent moves on; while it knows no leader, or only the one the
agent says it could not reach (``Register.unreachable_leader``: a dead leader whose lease
has not run out), it holds the Register until a leader is elected, so agents reach a new
leader as soon as it leads rather than after rounds of backoff. The
leader registers the host, answers Registered, then reads reports in one task while this
generator sends the host's commands; when the lead is lost, the session ends with NotLeader.
With mutual TLS a stream registers only as the host its certificate names
(``landlord://host/<id>``); another host id is PERMISSION_DENIED before anything is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import grpc

from common.errors import InvalidArgument, LandlordError
from common.gen.landlord.v1 import agent_pb2, agent_pb2_grpc
from common.identity import Role
from common.proto_values import duration_to_pb
from common.schema import STREAM_SCHEMA, check_stream_peer
from common.stream_commands import Command
from common.stream_convert import command_to_pb, registration_from_pb, report_from_pb
from coordinator.api.authz_interceptor import caller_identity
from coordinator.api.rpc_errors import abort_with
from coordinator.errors import NotLeader
from coordinator.fleet.agent_sessions import AgentSessions
from coordinator.fleet.liveness import LivenessPolicy
from coordinator.fleet.sessions import HostSession
from coordinator.state.leadership import Leadership

__all__ = ["AgentStreamService"]

log = logging.getLogger(__name__)

REGISTER_TIMEOUT = 30.0
HOLD_REGISTER = 15.0
"""How long a follower holds a Register while it knows no leader the agent can reach."""
ENCODED_CACHE = 4096


def _claims_another_host(host_id: str) -> str | None:
    """Why a stream may not register as ``host_id``: its certificate names another host.

    With mutual TLS the authz interceptor admitted the caller as a host identity; the host
    id it registers must be that identity's name, so a second stream for a host can only
    come from the holder of that host's certificate. Without mutual TLS (no interceptor,
    no identity) any host id is taken as given.
    """
    caller = caller_identity()
    if caller is None or (caller.role is Role.HOST and caller.name == host_id):
        return None
    return (f"{caller} may not register as host {host_id!r}: its certificate is for host "
            f"{caller.name!r}")


class AgentStreamService(agent_pb2_grpc.AgentStreamServicer):
    def __init__(self, sessions: AgentSessions, leadership: Leadership,
                 liveness: LivenessPolicy) -> None:
        self.sessions = sessions
        self.leadership = leadership
        self.liveness = liveness
        self.reports = 0
        self._cache: OrderedDict[str, tuple[Command, agent_pb2.CoordinatorMessage]] = \
            OrderedDict()

    def _encoded(self, outgoing: Command) -> agent_pb2.CoordinatorMessage:
        """A broadcast command (one id, every host) is converted once, not once per host."""
        found = self._cache.get(outgoing.command_id)
        if found is None or found[0] is not outgoing:
            found = (outgoing, agent_pb2.CoordinatorMessage(command=command_to_pb(outgoing)))
            self._cache[outgoing.command_id] = found
            while len(self._cache) > ENCODED_CACHE:
                self._cache.popitem(last=False)
        return found[1]

    def _not_leader(self) -> agent_pb2.CoordinatorMessage:
        leader = self.leadership.leader
        return agent_pb2.CoordinatorMessage(
            not_leader=agent_pb2.NotLeader(leader_address=leader.address if leader else ""))

    async def Session(self, request_iterator: AsyncIterator[agent_pb2.AgentMessage],
                      context: Any) -> AsyncIterator[agent_pb2.CoordinatorMessage]:
        try:
            async with asyncio.timeout(REGISTER_TIMEOUT):
                first = await anext(aiter(request_iterator))
        except (StopAsyncIteration, TimeoutError):
            await abort_with(context, InvalidArgument("the stream must start with Register"))
            return
        if first.WhichOneof("body") != "register":
            await abort_with(context, InvalidArgument("the first message must be Register"))
            return
        impostor = _claims_another_host(first.register.host_id)
        if impostor is not None:
            log.warning("registration refused: %s (peer %s)", impostor, context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, impostor)
            return
        if not self.leadership.is_leader:
            await self.leadership.until_led(first.register.unreachable_leader, HOLD_REGISTER)
            if not self.leadership.is_leader:
                yield self._not_leader()
                return
        try:
            registration = registration_from_pb(first.register)
            check_stream_peer(registration.schema, peer_role="agent", role="coordinator",
                              peer_release=registration.agent_version)
            session, _ = await self.sessions.open(registration)
        except NotLeader:
            yield self._not_leader()
            return
        except LandlordError as exc:
            log.warning("registration of host %s refused: %s", first.register.host_id, exc)
            await abort_with(context, exc)
            return
        settings = self.liveness
        yield agent_pb2.CoordinatorMessage(registered=agent_pb2.Registered(
            coordinator_id=self.leadership.me.id,
            report_interval=duration_to_pb(settings.report_interval),
            heartbeat_interval=duration_to_pb(settings.heartbeat_interval),
            schema=STREAM_SCHEMA,
        ))
        try:
            await self.sessions.announce(session)
        except LandlordError as exc:  # NotLeader too: the agent finds the leader again
            log.warning("session of host %s ended: %s", session.host_id, exc)
            self.sessions.close(session)
            if isinstance(exc, NotLeader):
                yield self._not_leader()
            return
        reader = asyncio.create_task(self._read(request_iterator, session),
                                     name=f"reports-{session.host_id}")
        try:
            while True:
                outgoing = await session.next_outgoing()
                if outgoing is None:
                    break
                session.sent += 1
                yield self._encoded(outgoing)
            if session.close_reason and not self.leadership.is_leader:
                yield self._not_leader()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.sessions.close(session)

    async def _read(self, requests: AsyncIterator[agent_pb2.AgentMessage],
                    session: HostSession) -> None:
        try:
            async for message in requests:
                if message.WhichOneof("body") != "report":
                    log.warning("host %s sent %s after registering; ignored", session.host_id,
                                message.WhichOneof("body"))
                    continue
                self.reports += 1
                try:
                    await self.sessions.report(session, report_from_pb(
                        message.report, session.host_id, self.sessions.observed))
                except NotLeader:
                    break
                except LandlordError as exc:
                    log.warning("report from %s refused: %s", session.host_id, exc)
        except Exception as exc:  # the agent went away; its stream is over
            log.info("stream from %s ended: %s", session.host_id, exc)
        finally:
            session.close("agent closed the stream")
