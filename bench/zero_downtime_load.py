"""The demo's load generator (scripts/demo_cluster/load.py), also noting when each request
was sent: an answer that arrives after a switch may have been routed before it, and a slow
answer (e.g. a connection retried after a dropped SYN) is a hiccup the failure count misses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from demo_cluster.load import Answer, LoadGenerator, ask

__all__ = ["TimedAnswer", "TimedLoad"]


@dataclass(frozen=True)
class TimedAnswer(Answer):
    sent: float = 0.0
    """Wall-clock seconds (epoch) when the request was sent."""

    @property
    def latency(self) -> float:
        return float(self.at - self.sent)


class TimedLoad(LoadGenerator):
    """``LoadGenerator`` whose answers are ``TimedAnswer``s (same threads, same requests)."""

    def _run(self, host: str, deadline: float) -> None:
        url = f"http://{host}:{self.port}/"
        while not self._stop.is_set() and time.monotonic() < deadline:
            sent = time.time()
            status, version = ask(url)
            with self._lock:
                self._answers.append(TimedAnswer(time.time(), host, status, version, sent))
            self._stop.wait(self.pause)

    def timed(self, since: float = 0.0) -> list[TimedAnswer]:
        return [a for a in self.answers(since) if isinstance(a, TimedAnswer)]
