"""Async clients for HAProxy's admin socket (runtime API) and master CLI.

Admin socket: commands are sent in one write after ``prompt`` and followed by
``quit``, so a batch is applied back-to-back by the worker and each reply is cut
out at its prompt. Master CLI: HAProxy 2.6 answers only after the client half-closes
its side (``shutdown(SHUT_WR)``), and ``reload`` closes the connection without a
reply, so completion is observed with ``show proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from agent.dataplane.haproxy_output import (
    ProcTable,
    command_failed,
    parse_show_info,
    parse_show_proc,
    split_prompt_replies,
)
from common.errors import FailedPrecondition, Unavailable

__all__ = ["AdminSocket", "MasterSocket"]

log = logging.getLogger(__name__)

_DELETE_BUSY = "Server still has connections attached"


async def _exchange(path: Path, payload: bytes, timeout: float, half_close: bool) -> str:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            # read while writing: a long batch must not wait on replies nobody reads
            replies = asyncio.ensure_future(reader.read())
            try:
                writer.write(payload)
                await writer.drain()
                if half_close:
                    writer.write_eof()
                data = await replies
            finally:
                if not replies.done():
                    replies.cancel()
                elif not replies.cancelled():
                    replies.exception()  # retrieved, so asyncio does not report it
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError as exc:
        raise Unavailable(f"HAProxy socket {path} did not answer in {timeout}s") from exc
    except OSError as exc:
        raise Unavailable(
            f"HAProxy socket {path} is not reachable: {exc}", socket=str(path)
        ) from exc
    return data.decode(errors="replace")


class AdminSocket:
    """The worker's runtime API (``stats socket ... level admin``)."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    async def run(self, commands: Sequence[str]) -> list[str]:
        """Send ``commands`` back-to-back on one connection; one reply per command."""
        if not commands:
            return []
        for command in commands:
            if "\n" in command or ";" in command:
                raise ValueError(f"one command per entry, without newline or ';': {command!r}")
        payload = "prompt\n" + "".join(f"{c}\n" for c in commands) + "quit\n"
        raw = await _exchange(self.path, payload.encode(), self.timeout, half_close=False)
        return split_prompt_replies(raw, len(commands))

    async def show(self, command: str) -> str:
        (reply,) = await self.run([command])
        return reply

    async def execute(self, commands: Sequence[str]) -> list[str]:
        """Like :meth:`run`, but a refused command raises FailedPrecondition (after all ran)."""
        replies = await self.run(commands)
        failures = [(c, r) for c, r in zip(commands, replies, strict=True) if command_failed(c, r)]
        if failures:
            detail = "; ".join(f"{c!r}: {r!r}" for c, r in failures)
            raise FailedPrecondition(f"HAProxy refused {len(failures)} command(s): {detail}")
        return replies

    async def worker_pid(self) -> int:
        info = parse_show_info(await self.show("show info"))
        try:
            return int(info["Pid"])
        except (KeyError, ValueError) as exc:
            raise Unavailable("HAProxy 'show info' did not report a Pid") from exc

    async def delete_server(
        self, backend: str, server: str, timeout: float, poll: float = 0.1
    ) -> None:
        """``del server`` once HAProxy has closed the server's idle connections.

        2.6 refuses to delete a server that still holds idle (reusable) connections;
        putting it in maintenance makes HAProxy close them shortly after.
        """
        target = f"{backend}/{server}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reply = await self.show(f"del server {target}")
            if reply in ("Server deleted.", "No such server."):
                return
            if _DELETE_BUSY not in reply or loop.time() >= deadline:
                raise FailedPrecondition(
                    f"HAProxy refused to delete {target}: {reply}", backend=backend, server=server
                )
            await self.show(f"shutdown sessions server {target}")
            await asyncio.sleep(poll)


class MasterSocket:
    """The master CLI (``-S path,level,admin``)."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    async def command(self, command: str) -> str:
        return await _exchange(self.path, f"{command}\n".encode(), self.timeout, half_close=True)

    async def show_proc(self) -> ProcTable:
        text = await self.command("show proc")
        try:
            return parse_show_proc(text)
        except ValueError as exc:
            raise Unavailable(f"HAProxy master gave no process table: {text[:200]!r}") from exc

    async def reload(self, admin: AdminSocket, timeout: float) -> ProcTable:
        """Hitless reload; returns once a new worker serves the admin socket."""
        before = await self.show_proc()
        with contextlib.suppress(Unavailable):
            await self.command("reload")  # the master closes the connection as it re-executes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(0.05)
            try:
                now = await self.show_proc()
            except Unavailable:
                continue  # the master is re-executing itself
            if now.reloads <= before.reloads:
                continue
            if now.failed_reloads > before.failed_reloads:
                raise FailedPrecondition("HAProxy rejected the new configuration on reload")
            fresh = set(now.workers) - set(before.workers)
            if not fresh:
                continue
            try:
                if await admin.worker_pid() in fresh:
                    log.info("haproxy reloaded: workers %s", sorted(fresh))
                    return now
            except Unavailable:
                continue
        raise Unavailable(f"HAProxy reload did not produce a serving worker in {timeout}s")
