"""The agent's health as ``/healthz`` answers it: connected to a coordinator, Docker
answers, HAProxy runs.

Each check is asked live (Docker's info call, a ``show info`` on HAProxy's admin socket,
with a short timeout each, both at once); ``judge`` turns the answers into the verdict and
the JSON body (pure). A check that does not apply is ``null`` in the body and does not
count: a standalone agent has no coordinator, an agent without a data plane no HAProxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["AgentHealth", "HealthFacts", "judge"]

CHECK_TIMEOUT_S = 2.0


class StreamState(Protocol):
    """What health reads of the coordinator stream (``CoordinatorStream``)."""

    connected: asyncio.Event
    coordinator_id: str
    target: str


class DockerPing(Protocol):
    async def info(self) -> Mapping[str, Any]: ...


class HaproxyPing(Protocol):
    async def dropped_logs(self) -> int:
        """Any answer from HAProxy's admin socket: it runs and serves its runtime API."""
        ...


@dataclass(frozen=True)
class HealthFacts:
    """The checks' answers: '' fine, else what failed; None: the check does not apply."""

    docker: str
    haproxy: str | None
    connected: bool | None
    coordinator_id: str = ""
    coordinator_address: str = ""


def judge(host_id: str, facts: HealthFacts) -> tuple[bool, dict[str, Any]]:
    """Healthy when every check that applies passed; the body says which did not."""
    coordinator = None if facts.connected is None else {
        "connected": facts.connected, "id": facts.coordinator_id if facts.connected else "",
        "address": facts.coordinator_address}
    haproxy = None if facts.haproxy is None else {"ok": not facts.haproxy,
                                                  "error": facts.haproxy}
    healthy = (not facts.docker and not facts.haproxy and facts.connected is not False)
    return healthy, {"host": host_id, "coordinator": coordinator,
                     "docker": {"ok": not facts.docker, "error": facts.docker},
                     "haproxy": haproxy}


async def _failure(check: Awaitable[Any], what: str, timeout: float) -> str:
    try:
        await asyncio.wait_for(check, timeout)
    except TimeoutError:
        return f"{what} did not answer within {timeout:g} s"
    except Exception as exc:  # any failure is the answer; its text says which
        return f"{what}: {exc}" if str(exc) else f"{what}: {type(exc).__name__}"
    return ""


class AgentHealth:
    """A ``HealthCheck`` for ``common.metrics_http``."""

    def __init__(self, host_id: str, docker: DockerPing, stream: StreamState | None = None,
                 haproxy: HaproxyPing | None = None, timeout: float = CHECK_TIMEOUT_S
                 ) -> None:
        self.host_id = host_id
        self.docker = docker
        self.stream = stream
        self.haproxy = haproxy
        self.timeout = timeout

    async def __call__(self) -> tuple[bool, Mapping[str, Any]]:
        async def no_haproxy() -> str | None:
            return None

        docker, haproxy = await asyncio.gather(
            _failure(self.docker.info(), "docker", self.timeout),
            no_haproxy() if self.haproxy is None else
            _failure(self.haproxy.dropped_logs(), "haproxy", self.timeout))
        stream = self.stream
        facts = HealthFacts(
            docker=docker, haproxy=haproxy,
            connected=None if stream is None else stream.connected.is_set(),
            coordinator_id=stream.coordinator_id if stream is not None else "",
            coordinator_address=stream.target if stream is not None else "")
        return judge(self.host_id, facts)
