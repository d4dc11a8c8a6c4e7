"""Keep CPython's full garbage collections short in a coordinator with a large heap.

A coordinator keeps the whole cluster in memory (hosts, instances, observations, routes,
one stream per agent). CPython's full (generation 2) collection walks every tracked object,
so with 1,000 hosts x 50 instances one collection holds the event loop for about a second,
and every report waiting behind it is late by as much.

``GcPacing`` moves what has lived through ``freeze_every`` seconds into the interpreter's
permanent generation (``gc.freeze()``), which collections skip: later full collections walk
only what is newer. Cycles that become garbage among frozen objects are reclaimed when
everything is thawed again (``thaw_every``): thawed, collected and frozen again at once, so
the period has one long collection (before, the collections that came by themselves after
a thaw each walked the whole heap until the next freeze: two pauses of 2 s each at 150,000
instances).
Every full collection is timed; one over ``warn_ms`` is logged.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["GcPacing"]

log = logging.getLogger(__name__)


class GcPacing:
    def __init__(self, freeze_every: float = 30.0, thaw_every: float = 600.0,
                 warn_ms: float = 200.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < freeze_every <= thaw_every:
            raise ValueError("need 0 < freeze_every <= thaw_every")
        self.freeze_every = freeze_every
        self.thaw_every = thaw_every
        self.warn_ms = warn_ms
        self.clock = clock
        self.full_collections = 0
        self.longest_ms = 0.0
        self._started: float | None = None
        self._thawed_at = clock()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = self.clock()
            return
        if self._started is None:
            return
        took = (self.clock() - self._started) * 1000.0
        self._started = None
        self.full_collections += 1
        self.longest_ms = max(self.longest_ms, took)
        if took > self.warn_ms:
            log.warning("full garbage collection took %.0f ms (%d objects frozen)",
                        took, gc.get_freeze_count())

    def step(self) -> str:
        """One pacing round: thaw when the period is over, else freeze what lives now."""
        now = self.clock()
        if now - self._thawed_at >= self.thaw_every:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._thawed_at = now
            return "thawed"
        gc.freeze()
        return "frozen"

    async def run(self) -> None:
        """Time collections and pace them until cancelled (then everything is thawed)."""
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                await asyncio.sleep(self.freeze_every)
                self.step()
        finally:
            gc.callbacks.remove(self._on_gc)
            gc.unfreeze()
