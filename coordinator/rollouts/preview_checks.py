"""Green's integration and performance checks through the preview route.

Every request goes to a host's entry point for the unit (HAProxy frontend on the service
port) with the version-pinning header, so HAProxy sends it to the new version's servers
only, whatever the traffic split says.

A command check runs inside one green container instead: the coordinator sends RunCheck
to that instance's host, whose agent runs it with ``docker exec`` (bounded time, first
4 KiB of output) and reports exit code and output back; ``judge_command`` decides. A host
that is not connected or does not answer raises Unavailable out of ``run``: the runner
carries the checks out again (and the engine gives up after its failure limit) rather
than failing green for it.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from common.errors import InvalidArgument, LandlordError, Unavailable
from common.input_bounds import CONTROL_PLANE_PORTS, check_path
from common.latency import LatencySketch
from common.stream_messages import CommandResult
from coordinator.rollouts.actions import CheckReport, RunChecks
from coordinator.rollouts.settings import CheckSpec

__all__ = [
    "PREVIEW_HEADER",
    "ContainerCommands",
    "GreenTarget",
    "HttpReply",
    "PreviewChecker",
    "http_get",
    "judge_command",
]

PREVIEW_HEADER = "X-Landlord-Version"
"""The agent data plane's default version-pinning header (agent/dataplane/settings.py)."""
MAX_BODY = 64 * 1024
EXCERPT = 200
"""Characters of a failed command's output quoted in its failure reason."""


class ContainerCommands(Protocol):
    """Runs a command in an instance's container on its host (coordinator/fleet/check_calls.py)."""

    async def run_check(self, instance_id: str, argv: Sequence[str],
                        timeout_s: float) -> CommandResult: ...


@dataclass(frozen=True)
class GreenTarget:
    """The green instance command checks run in."""

    commands: ContainerCommands
    instance_id: str


def _excerpt(result: CommandResult) -> str:
    text = (result.stderr.strip() or result.stdout.strip())[-EXCERPT:]
    return f" (output: {text!r})" if text else ""


def judge_command(check: CheckSpec, result: CommandResult) -> str:
    """Why a command check failed ("" when it passed): it must have completed, with the
    expected exit code, and with the expected text in stdout or stderr."""
    if not result.ok:
        return f"{check.name}: {result.error or 'the command was not carried out'}" + (
            _excerpt(result))
    if result.exit_code != check.expect_exit_code:
        return (f"{check.name}: exit code {result.exit_code}, expected "
                f"{check.expect_exit_code}{_excerpt(result)}")
    wanted = check.expect_output_contains
    if wanted and wanted not in result.stdout and wanted not in result.stderr:
        cut = " (output was truncated)" if result.output_truncated else ""
        return f"{check.name}: output does not contain {wanted!r}{cut}{_excerpt(result)}"
    return ""


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    elapsed_ms: float


_PATH_SAFE = "/?&=%:@!$()*+,;~-._"
"""Characters of a validated path sent as they are; ``quote`` escapes any other."""


def _get(address: str, port: int, target: str, headers: dict[str, str],
         timeout: float) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        # http.client writes the request line and headers itself and refuses control
        # characters and spaces in either (InvalidURL, ValueError)
        connection.request("GET", target, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read(MAX_BODY)
    finally:
        connection.close()


async def http_get(address: str, port: int, path: str, headers: dict[str, str],
                   timeout: float = 5.0) -> HttpReply:
    """One HTTP/1.1 GET of ``path`` (checked, then percent-quoted) with http.client in a
    worker thread, connection closed after it; raises OSError, TimeoutError, ValueError
    (http.client's refusals, an ``http.client.HTTPException`` for a malformed answer) or
    InvalidArgument (a path that is not a plain HTTP path)."""
    check_path("check path", path)
    target = quote(path, safe=_PATH_SAFE)
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        status, body = await asyncio.to_thread(_get, address, port, target, headers, timeout)
    return HttpReply(status, body, (time.perf_counter() - started) * 1000)


class PreviewChecker:
    """Runs RunChecks against ``(address, service_port)`` of one host of the building."""

    def __init__(self, timeout: float = 5.0, concurrency: int = 4) -> None:
        self.timeout = timeout
        self.concurrency = concurrency

    async def run(self, action: RunChecks, address: str, port: int,
                  green: GreenTarget | None = None) -> CheckReport:
        """HTTP checks through ``(address, port)``; command checks in ``green``."""
        headers = {PREVIEW_HEADER: action.version}
        if port in CONTROL_PLANE_PORTS:  # a version recorded before ports were checked
            return CheckReport(0, (f"service port {port} is {CONTROL_PLANE_PORTS[port]}: "
                                   "not checked",), None)
        failed = [await self._command(check, green) if check.exec_argv
                  else await self._one(check, address, port, headers)
                  for check in action.checks]
        p95: float | None = None
        if action.measure_latency and action.performance_requests > 0:
            p95, errors = await self._burst(action.performance_requests, address, port, headers)
            if errors:
                failed.append(f"performance burst: {errors} of {action.performance_requests} "
                              "requests failed")
        return CheckReport(0, tuple(f for f in failed if f), p95)

    async def _command(self, check: CheckSpec, green: GreenTarget | None) -> str:
        if green is None:
            return f"{check.name}: no healthy green instance to run it in"
        try:
            result = await green.commands.run_check(green.instance_id, check.exec_argv,
                                                    check.timeout_s)
        except Unavailable:
            raise  # the host is away, not green at fault: the runner tries the checks again
        except LandlordError as exc:
            return f"{check.name}: not run in {green.instance_id}: {exc}"
        return judge_command(check, result)

    async def _one(self, check: CheckSpec, address: str, port: int,
                   headers: dict[str, str]) -> str:
        try:
            reply = await http_get(address, port, check.path, headers, self.timeout)
        except (OSError, TimeoutError, ValueError, http.client.HTTPException,
                InvalidArgument) as exc:
            return f"{check.name}: request failed ({type(exc).__name__}: {exc})"
        if reply.status != check.expect_status:
            return f"{check.name}: got status {reply.status}"
        wanted = check.expect_body_contains.encode()
        if wanted and wanted not in reply.body:
            return f"{check.name}: body does not contain {check.expect_body_contains!r}"
        return ""

    async def _burst(self, count: int, address: str, port: int,
                     headers: dict[str, str]) -> tuple[float | None, int]:
        sketch = LatencySketch()
        errors = 0
        left = list(range(count))

        async def worker() -> None:
            nonlocal errors
            while left:
                left.pop()
                try:
                    reply = await http_get(address, port, "/", headers, self.timeout)
                except (OSError, TimeoutError, ValueError, http.client.HTTPException):
                    errors += 1
                    continue
                if reply.status >= 500:
                    errors += 1
                sketch.add(reply.elapsed_ms)

        workers: Sequence[asyncio.Task[None]] = [
            asyncio.create_task(worker()) for _ in range(min(self.concurrency, count))]
        await asyncio.gather(*workers)
        return sketch.quantile(0.95), errors
