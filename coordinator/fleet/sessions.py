"""The leader's memory of connected agents: sessions, what they observe, when they spoke.

Nothing here touches etcd. Heartbeats and per-report observations live only here (a
report is not a write); the etcd side of liveness is one lease per host
(coordinator/fleet/host_records.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import replace

from common.errors import Unavailable
from common.stream_commands import (
    COMMAND_KINDS,
    AgentCommand,
    Command,
    StartInstance,
    StopInstance,
)
from common.stream_messages import ObservedInstance, UsageReading
from coordinator.fleet.liveness import HostSeen
from coordinator.state.records import HostHealth

__all__ = ["Fleet", "HostSession"]


_ids = itertools.count(1)


class HostSession:
    """One open agent stream: commands go out through ``outbox``."""

    def __init__(self, host_id: str, building: str, address: str, opened_at: float) -> None:
        self.host_id = host_id
        self.building = building
        self.address = address
        self.opened_at = opened_at
        self.session_id = next(_ids)
        self._outbox: asyncio.Queue[Command | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.leader_address = ""
        self.sent = 0
        self.warned: set[str] = set()
        """Kinds of foreign reports already logged for this stream (logged once each)."""

    def send(self, outgoing: Command) -> None:
        if not self.closed.is_set():
            self._outbox.put_nowait(outgoing)

    def close(self, reason: str, leader_address: str = "") -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.leader_address = leader_address
        self.closed.set()
        self._outbox.put_nowait(None)  # wakes the sender; commands queued before still go

    async def next_outgoing(self) -> Command | None:
        """The next command to send, or None once the session is closed."""
        if self.closed.is_set() and self._outbox.empty():
            return None
        return await self._outbox.get()


def command_id(command: AgentCommand) -> str:
    """Start and stop ids are stable per instance, so a replay is recognisably the same."""
    if isinstance(command, StartInstance):
        return f"start:{command.instance_id}"
    if isinstance(command, StopInstance):
        return f"stop:{command.instance_id}"
    return f"{COMMAND_KINDS[type(command)]}:{next(_ids)}"


class Fleet:
    """Sessions by host, when each host was last heard from, and the latest observations."""

    def __init__(self) -> None:
        self.commands_sent = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new leadership term starts from etcd, not from memory)."""
        self.sessions: dict[str, HostSession] = {}
        self.seen: dict[str, HostSeen] = {}
        self.health: dict[str, HostHealth] = {}
        self.observed: dict[str, ObservedInstance] = {}
        """The latest observation of each instance, but for usage-only changes since."""
        self.usage: dict[str, Mapping[str, float]] = {}
        """Usage reported since the instance's observation (``observed``), and below its
        activity, kept apart: most steady-state reports change only these, and building
        a new observation for each was most of the leader's work at 150,000 instances.
        Two maps of values the garbage collector does not track (a dict of floats, a
        float), so tens of thousands of readings a second leave it nothing new to walk."""
        self.activity: dict[str, float] = {}
        self._observed_by_host: dict[str, set[str]] = {}
        self.images: dict[str, frozenset[str]] = {}

    def attach(self, session: HostSession, now: float) -> HostSession | None:
        """Make ``session`` the host's stream; returns the one it replaces, if any."""
        old = self.sessions.get(session.host_id)
        self.sessions[session.host_id] = session
        self.seen[session.host_id] = HostSeen(now, True)
        if old is not None:
            old.close("replaced by a newer stream from the same host")
        return old

    def connect(self, session: HostSession, images: Iterable[str],
                instances: Iterable[ObservedInstance], now: float) -> None:
        """A host registered: its stream, alive, its images, and what it runs now (which
        replaces whatever was observed of it before)."""
        self.attach(session, now)
        self.health[session.host_id] = HostHealth.ALIVE
        self.images[session.host_id] = frozenset(images)
        self.forget_observations(session.host_id)
        for observed in instances:
            self.observe(observed)

    def detach(self, session: HostSession, now: float) -> bool:
        """Forget ``session`` if it is still the host's stream; True if it was."""
        if self.sessions.get(session.host_id) is not session:
            return False
        del self.sessions[session.host_id]
        last = self.seen.get(session.host_id, HostSeen(now, False))
        self.seen[session.host_id] = HostSeen(last.last_seen, False, now)
        return True

    def session_for(self, host_id: str, instance_id: str) -> HostSession:
        """The stream of the host that runs ``instance_id``; Unavailable when it is not
        connected (a call for one instance goes to its host's agent)."""
        session = self.sessions.get(host_id)
        if session is None:
            raise Unavailable(f"host {host_id} of {instance_id} is not connected",
                              host=host_id, instance=instance_id)
        return session

    def heard_from(self, host_id: str, now: float) -> None:
        if host_id in self.sessions:
            self.seen[host_id] = HostSeen(now, True)

    def expect(self, host_ids: Iterable[str], now: float) -> None:
        """Hosts known from etcd but not yet connected to this leader (after a takeover)."""
        for host_id in host_ids:
            self.seen.setdefault(host_id, HostSeen(now, False))

    def forget_host(self, host_id: str) -> None:
        self.seen.pop(host_id, None)
        self.health.pop(host_id, None)
        self.images.pop(host_id, None)
        self.forget_observations(host_id)

    def observe(self, observed: ObservedInstance) -> ObservedInstance | None:
        """Record the latest observation; returns the previous one."""
        previous = self.observed.get(observed.instance_id)
        if previous is not None and previous.host_id != observed.host_id:
            self._observed_by_host.get(previous.host_id, set()).discard(observed.instance_id)
        self.observed[observed.instance_id] = observed
        self.usage.pop(observed.instance_id, None)
        self.activity.pop(observed.instance_id, None)
        self._observed_by_host.setdefault(observed.host_id, set()).add(observed.instance_id)
        return previous

    def observe_usage(self, reading: UsageReading) -> None:
        """Record usage and activity of an observed instance (nothing else changed)."""
        if reading.instance_id in self.observed:
            self.usage[reading.instance_id] = reading.usage
            self.activity[reading.instance_id] = reading.last_activity

    def freshest(self, instance_id: str) -> ObservedInstance | None:
        """The latest observation with the usage and activity reported since."""
        observed = self.observed.get(instance_id)
        usage = self.usage.get(instance_id)
        if observed is None or usage is None:
            return observed
        return replace(observed, usage=usage, last_activity=self.activity[instance_id])

    def unobserve(self, instance_id: str) -> ObservedInstance | None:
        gone = self.observed.pop(instance_id, None)
        self.usage.pop(instance_id, None)
        self.activity.pop(instance_id, None)
        if gone is not None:
            self._observed_by_host.get(gone.host_id, set()).discard(instance_id)
        return gone

    def observed_on(self, host_id: str) -> list[str]:
        return sorted(self._observed_by_host.get(host_id, ()))

    def observed_ids_on(self, host_id: str) -> set[str]:
        return self._observed_by_host.get(host_id, set())

    def forget_observations(self, host_id: str) -> None:
        for iid in self._observed_by_host.pop(host_id, set()):
            self.observed.pop(iid, None)
            self.usage.pop(iid, None)
            self.activity.pop(iid, None)

    def send(self, host_id: str, command: AgentCommand) -> bool:
        """Queue ``command`` for the host; False if it has no open stream (it will get the
        desired state when it registers)."""
        session = self.sessions.get(host_id)
        if session is None:
            return False
        session.send(Command(command_id(command), command))
        self.commands_sent += 1
        return True

    def broadcast(self, host_ids: Iterable[str], command: AgentCommand) -> int:
        """The same command (one id) to every connected host of ``host_ids``, at once."""
        outgoing = Command(command_id(command), command)
        sent = 0
        for host_id in host_ids:
            session = self.sessions.get(host_id)
            if session is not None:
                session.send(outgoing)
                sent += 1
        self.commands_sent += sent
        return sent

    def close_all(self, reason: str, leader_address: str = "") -> None:
        for session in list(self.sessions.values()):
            session.close(reason, leader_address)
        self.sessions.clear()
