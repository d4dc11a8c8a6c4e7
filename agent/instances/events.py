"""Agent events: one shape for everything the stream, the data plane and tests consume.

Their types are ``common.event_types.EventType`` (shared with the coordinator), re-exported
here for the agent's modules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.event_types import EventType

__all__ = ["AgentEvent", "EventBus", "EventType"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentEvent:
    """One event: what happened, to which instance of which unit version, when."""

    type: str
    """An ``EventType`` value."""
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
        self._listeners: list[Callable[[AgentEvent], None]] = []

    def listen(self, listener: Callable[[AgentEvent], None]) -> None:
        """Call ``listener`` with every event as it is published (it must be quick and not
        block: it runs inside ``publish``); unlike a subscriber it never misses one."""
        self._listeners.append(listener)

    def publish(self, event: AgentEvent) -> None:
        self._history.append(event)
        log.info("event %s", event.type, extra={"event": event.to_dict()})
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop the event
                log.exception("event listener %r failed on %s", listener, event.type)
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
