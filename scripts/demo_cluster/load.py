"""Steady HTTP load on every host's entry point, one bounded thread per host.

Every answer is recorded with its wall-clock time (comparable with the coordinator's rollout
timestamps: same machine), the host, the HTTP status (0: no HTTP answer at all) and the
version that answered (from the demo app's JSON body, also on its 500s).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Answer", "LoadGenerator", "ask"]


@dataclass(frozen=True)
class Answer:
    at: float
    """Wall-clock seconds (epoch) when the answer arrived."""
    host: str
    status: int
    """HTTP status, 0 when the request got no HTTP answer (connection error, timeout)."""
    version: str
    """Version named in the body; empty when there was none."""

    @property
    def ok(self) -> bool:
        return self.status == 200


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
    """One client thread per host; ``stop()`` or ``max_seconds`` ends it."""

    def __init__(self, hosts: Sequence[str], port: int, pause: float = 0.01,
                 max_seconds: float = 600.0) -> None:
        self.hosts = list(hosts)
        self.port = port
        self.pause = pause
        self.max_seconds = max_seconds
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadGenerator:
        deadline = time.monotonic() + self.max_seconds
        for host in self.hosts:
            thread = threading.Thread(target=self._run, args=(host, deadline), daemon=True,
                                      name=f"load-{host}")
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, host: str, deadline: float) -> None:
        url = f"http://{host}:{self.port}/"
        while not self._stop.is_set() and time.monotonic() < deadline:
            status, version = ask(url)
            with self._lock:
                self._answers.append(Answer(time.time(), host, status, version))
            self._stop.wait(self.pause)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def answers(self, since: float = 0.0, until: float = float("inf")) -> list[Answer]:
        with self._lock:
            return [a for a in self._answers if since <= a.at <= until]

    def only(self, version: str, since: float) -> bool:
        """Every host answered since ``since``, and every answer was a 200 from ``version``."""
        seen = self.answers(since)
        return ({a.host for a in seen} == set(self.hosts)
                and all(a.ok and a.version == version for a in seen))
