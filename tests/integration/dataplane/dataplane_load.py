"""A small keep-alive HTTP load generator in its own process (for tests and the bench).

Running it in a separate process keeps its threads from competing for the GIL with
the asyncio loop that reads HAProxy's request log. Each request is kept as
``Result(t0, t1, status, version, error)`` with ``time.monotonic()`` stamps, which
are comparable across processes on Linux (CLOCK_MONOTONIC).
"""

from __future__ import annotations

import http.client
import multiprocessing
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import NamedTuple


class Result(NamedTuple):
    t0: float
    t1: float
    status: int
    version: str
    error: str

    @property
    def failed(self) -> bool:
        return bool(self.error) or self.status != 200


def _worker(
    host: str,
    port: int,
    headers: Mapping[str, str],
    stop: Event,
    counter: Synchronized,  # type: ignore[type-arg]
    out: list[Result],
) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            conn.request("GET", "/", headers=dict(headers))
            response = conn.getresponse()
            response.read()
            result = Result(
                t0,
                time.monotonic(),
                response.status,
                response.getheader("X-Served-Version", ""),
                "",
            )
            if response.will_close:
                conn.close()  # http.client reconnects on the next request
        except (OSError, http.client.HTTPException) as exc:
            result = Result(t0, time.monotonic(), 0, "", repr(exc))
            conn.close()
        out.append(result)
        with counter.get_lock():
            counter.value += 1
    conn.close()


def _run(
    host: str,
    port: int,
    concurrency: int,
    headers: Mapping[str, str],
    stop: Event,
    counter: Synchronized,  # type: ignore[type-arg]
    pipe: Connection,
) -> None:
    outs: list[list[Result]] = [[] for _ in range(concurrency)]
    threads = [
        threading.Thread(target=_worker, args=(host, port, headers, stop, counter, out))
        for out in outs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pipe.send([tuple(r) for out in outs for r in out])
    pipe.close()


class LoadGenerator:
    """``with LoadGenerator(host, port) as load: ...; results = load.stop()``."""

    def __init__(
        self,
        host: str,
        port: int,
        concurrency: int = 8,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._counter = ctx.Value("q", 0)
        self._recv, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_run,
            args=(host, port, concurrency, dict(headers or {}), self._stop, self._counter, send),
            daemon=True,
        )
        self._send = send
        self.results: list[Result] | None = None

    @property
    def count(self) -> int:
        return int(self._counter.value)

    def start(self) -> LoadGenerator:
        self._process.start()
        self._send.close()
        return self

    def stop(self, timeout: float = 30.0) -> list[Result]:
        if self.results is None:
            self._stop.set()
            if not self._recv.poll(timeout):
                raise TimeoutError("load generator did not report")
            self.results = [Result(*r) for r in self._recv.recv()]
            self._process.join(timeout)
        return self.results

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
            self._recv.close()


def failures(results: list[Result]) -> list[Result]:
    return [r for r in results if r.failed]


def between(results: list[Result], start: float, end: float) -> list[Result]:
    """Requests sent at or after ``start`` and answered before ``end``."""
    return [r for r in results if r.t0 >= start and r.t1 <= end]


def share(results: list[Result], version: str) -> float:
    """Percentage of ``results`` served by ``version``."""
    if not results:
        return 0.0
    return 100.0 * sum(1 for r in results if r.version == version) / len(results)
