"""Agent events: one shape for everything the stream, the data plane and tests consume."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["AgentEvent", "EventBus", "EventType"]

log = logging.getLogger(__name__)


class EventType:
    """Names of the events the agent emits."""

    STATE: Final = "instance.state"
    """A lifecycle transition (details: from, to, reason)."""
    HEALTH: Final = "instance.health"
    """Health flipped (details: healthy, score)."""
    REMOVED: Final = "instance.removed"
    ADOPTED: Final = "instance.adopted"
    EVICTED: Final = "instance.evicted"
    CRASHED: Final = "instance.crashed"
    TRAFFIC_SWITCH: Final = "traffic.switch"
    """Traffic should move to a replacement (details: old/new container, address, port)."""
    LIMIT_EXCEEDED: Final = "limit_exceeded"
    MEMORY_PRESSURE: Final = "memory_pressure"
    MEMORY_LEAK: Final = "memory_leak"
    CRASH_DUMP: Final = "dump.crash"
    MEMORY_DUMP: Final = "dump.memory"
    RECOVERY_ATTEMPT: Final = "recovery.attempt"
    RECOVERY_SUCCESS: Final = "recovery.success"
    RECOVERY_FAILURE: Final = "recovery.failure"
    ESCALATION: Final = "recovery.escalated"
    GC_COLLECTED: Final = "gc.collected"
    GC_MEMORY: Final = "gc.memory"
    GC_CACHE: Final = "gc.cache"
    LIMIT_NOT_ENFORCED: Final = "limit_not_enforced"


@dataclass(frozen=True)
class AgentEvent:
    """One event: what happened, to which instance of which unit version, when."""

    type: str
    instance: str
    unit: str
    version: str
    time: float
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "instance": self.instance,
            "unit": self.unit,
            "version": self.version,
            "time": self.time,
            "details": dict(self.details),
        }


class EventBus:
    """Fan-out of events to any number of async subscribers, plus a short history.

    A slow subscriber loses its oldest events rather than blocking the agent.
    """

    def __init__(self, history: int = 1000, queue_size: int = 10_000) -> None:
        self._history: deque[AgentEvent] = deque(maxlen=history)
        self._queues: set[asyncio.Queue[AgentEvent | None]] = set()
        self._queue_size = queue_size

    def publish(self, event: AgentEvent) -> None:
        self._history.append(event)
        log.info("event %s", event.type, extra={"event": event.to_dict()})
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    def recent(self, event_type: str | None = None) -> list[AgentEvent]:
        """Events still in the history, oldest first, optionally of one type."""
        return [e for e in self._history if event_type is None or e.type == event_type]

    async def subscribe(self) -> AsyncIterator[AgentEvent]:
        """Every event published from now on, until ``close()``."""
        queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._queues.discard(queue)

    def close(self) -> None:
        """End every subscription."""
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(None)
