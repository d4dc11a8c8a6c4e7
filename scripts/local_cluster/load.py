"""Steady HTTP load on every host's entry point, one bounded client thread per host.

Every answer is recorded with the time its request was sent and the time it arrived (on the
generator's clock: wall-clock by default, comparable with the coordinator's rollout
timestamps on the same machine), the host, the HTTP status (0: no HTTP answer at all) and
the version that answered (from the demo app's JSON body, also on its 500s). Each request
uses a new connection, as a client arriving through the entry point would.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Self

__all__ = ["Answer", "LoadGenerator", "ask", "failed"]


@dataclass(frozen=True)
class Answer:
    at: float
    """When the answer arrived (the generator's clock)."""
    host: str
    status: int
    """HTTP status, 0 when the request got no HTTP answer (connection error, timeout)."""
    version: str
    """Version named in the body; empty when there was none."""
    sent: float = 0.0
    """When the request was sent: an answer that arrives after a switch may have been routed
    before it, and a slow answer is a hiccup the failure count misses."""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def latency(self) -> float:
        return self.at - self.sent


def failed(answers: Iterable[Answer]) -> list[Answer]:
    return [a for a in answers if not a.ok]


def ask(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """One GET: (status, version); status 0 when there was no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status), str(json.loads(reply.read()).get("version", ""))
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                return int(exc.code), str(json.loads(exc.read()).get("version", ""))
            except ValueError:
                return int(exc.code), ""
    except (OSError, ValueError):
        return 0, ""


class LoadGenerator:
    """One client thread per host, ``pause`` seconds between two of its requests;
    ``close()`` or ``max_seconds`` ends it."""

    def __init__(self, hosts: Sequence[str], port: int, pause: float = 0.01,
                 max_seconds: float = 600.0, clock: Callable[[], float] = time.time) -> None:
        self.hosts = list(hosts)
        self.port = port
        self.pause = pause
        self.max_seconds = max_seconds
        self.clock = clock
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, max_seconds: float | None = None) -> Self:
        deadline = time.monotonic() + (max_seconds or self.max_seconds)
        for host in self.hosts:
            thread = threading.Thread(target=self._run, args=(host, deadline), daemon=True,
                                      name=f"load-{host}")
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, host: str, deadline: float) -> None:
        url = f"http://{host}:{self.port}/"
        while not self._stop.is_set() and time.monotonic() < deadline:
            sent = self.clock()
            status, version = ask(url, timeout=10.0)
            with self._lock:
                self._answers.append(Answer(self.clock(), host, status, version, sent))
            self._stop.wait(self.pause)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def answers(self, since: float = 0.0, until: float = float("inf")) -> list[Answer]:
        with self._lock:
            return [a for a in self._answers if since <= a.at <= until]

    def only(self, version: str, since: float) -> bool:
        """Every host answered since ``since``, and every answer was a 200 from ``version``."""
        seen = self.answers(since)
        return ({a.host for a in seen} == set(self.hosts)
                and all(a.ok and a.version == version for a in seen))
