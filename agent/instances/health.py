"""Health probes (HTTP, or a command in the container) and the pure bookkeeping that
turns probe results into verdicts."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from agent.instances.spec import HealthSpec
from agent.runtime.protocol import ContainerRuntime
from common.errors import LandlordError

__all__ = ["HealthTracker", "Verdict", "command_probe", "http_probe"]

SCORE_WINDOW = 10


async def command_probe(runtime: ContainerRuntime, container_id: str | None, argv: tuple[str, ...],
                        timeout: float) -> bool:
    """Run ``argv`` in the container (``docker exec``, no shell); healthy when it exits 0
    within ``timeout`` seconds. A container that is gone or not running is unhealthy."""
    if container_id is None:
        return False
    try:
        result = await runtime.exec(container_id, argv, timeout, max_output=1024)
    except LandlordError:
        return False
    return result.exit_code == 0 and not result.timed_out


async def http_probe(address: str, port: int, path: str, timeout: float) -> bool:
    """GET ``path``; healthy on a 2xx or 3xx status within ``timeout`` seconds.

    Raw non-blocking socket calls rather than streams: a probe per instance every few
    seconds is the agent's main steady cost, and this halves it.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    request = (f"GET {path} HTTP/1.1\r\nHost: {address}:{port}\r\n"
               "User-Agent: landlord-agent\r\nConnection: close\r\n\r\n").encode()
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (address, port))
            await loop.sock_sendall(sock, request)
            head = b""
            while b"\r\n" not in head and len(head) < 1024:
                chunk = await loop.sock_recv(sock, 1024)
                if not chunk:
                    break
                head += chunk
        parts = head.split(b"\r\n", 1)[0].split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        sock.close()


class Verdict(StrEnum):
    """What one probe result changed."""

    UNCHANGED = "unchanged"
    BECAME_HEALTHY = "became_healthy"
    BECAME_UNHEALTHY = "became_unhealthy"


@dataclass
class HealthTracker:
    """Consecutive-success/failure thresholds plus a score over the last probes.

    ``warmup`` is measured from ``started`` (monotonic seconds): before it ends, successes
    do not make the instance healthy and failures do not count against it.
    """

    spec: HealthSpec
    started: float
    healthy: bool = False
    ever_healthy: bool = False
    successes: int = 0
    failures: int = 0
    window: deque[bool] = field(default_factory=lambda: deque(maxlen=SCORE_WINDOW))

    def warming_up(self, now: float) -> bool:
        return now - self.started < self.spec.warmup

    @property
    def score(self) -> float:
        if not self.window:
            return 1.0 if self.healthy else 0.0
        return sum(self.window) / len(self.window)

    def observe(self, ok: bool, now: float) -> Verdict:
        if self.warming_up(now):
            if ok:
                self.successes += 1
            return Verdict.UNCHANGED
        self.window.append(ok)
        if ok:
            self.successes += 1
            self.failures = 0
            if not self.healthy and self.successes >= self.spec.success_threshold:
                self.healthy = True
                if not self.ever_healthy:  # failures while starting are not ill health
                    self.window.clear()
                    self.window.extend([True] * self.successes)
                self.ever_healthy = True
                return Verdict.BECAME_HEALTHY
        else:
            self.failures += 1
            self.successes = 0
            if self.healthy and self.failures >= self.spec.failure_threshold:
                self.healthy = False
                return Verdict.BECAME_UNHEALTHY
        return Verdict.UNCHANGED
