"""Steady HTTP load on every host's entry point, one bounded client thread per host.

Every answer is recorded with the time its request was sent and the time it arrived (on the
generator's clock: wall-clock by default, comparable with the coordinator's rollout
timestamps on the same machine), the host, the HTTP status (0: no HTTP answer at all) and
the version that answered (from the demo app's JSON body, also on its 500s). Each request
uses a new connection, as a client arriving through the entry point would.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self

__all__ = ["Answer", "LoadGenerator", "ask", "failed", "get_json", "http_get"]


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


def http_get(address: str, port: int, path: str = "/", timeout: float = 5.0
             ) -> tuple[int, bytes]:
    """One GET: (status, body) whatever the status; OSError when nothing answered.

    The connection and the response are closed before it returns, on every path: a reply
    left to the garbage collector (urllib's HTTPError of a 5xx nobody closed) is a socket
    the test process would report unclosed, at a random later moment."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        try:
            return reply.status, reply.read()
        finally:
            reply.close()
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer from {address}:{port}: {exc!r}") from exc
    finally:
        conn.close()


def get_json(address: str, port: int, path: str = "/", timeout: float = 5.0
             ) -> tuple[int, dict[str, Any]]:
    """One GET of a JSON answer: (status, object); {} when the body is not a JSON object."""
    status, body = http_get(address, port, path, timeout)
    try:
        found = json.loads(body)
    except ValueError:
        return status, {}
    return status, dict(found) if isinstance(found, dict) else {}


def ask(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """One GET: (status, version); status 0 when there was no HTTP answer."""
    parts = urllib.parse.urlsplit(url)
    try:
        status, found = get_json(parts.hostname or "", parts.port or 80, parts.path or "/",
                                 timeout)
    except OSError:
        return 0, ""
    return status, str(found.get("version", ""))


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
