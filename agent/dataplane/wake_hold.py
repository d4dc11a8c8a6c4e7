"""Requests to a collected unit held in HAProxy while the unit wakes (issue 17).

HAProxy 2.6 answers 503 at once when a backend has no usable server, so every unit backend
runs a Lua action (HAProxy's built-in Lua 5.3) first when none is usable
(``http-request lua.landlord_hold if !{ nbsrv gt 0 }``). The action asks this agent, over
a one-line TCP exchange with ``WakeListener`` on the agent's address, whether the backend's
unit is collected ("wake BACKEND" -> "hold" or "no"); the agent's answer is the unit's last
route (``SetRoute.wake_on_request``), and a "hold" also asks the coordinator to wake it.
A held request polls, inside HAProxy, until the backend has a usable server (up and with
weight, as the woken instance's route gives it), then goes on to it as any other request;
past ``hold_s`` or beyond ``max_held`` requests held on this host it is answered 503 with
``Retry-After``, so every request gets an answer. A unit that is not collected (stopped,
crashed, paused) keeps HAProxy's immediate 503. If the agent does not answer, requests are
not held.

Checked by hand on HAProxy 2.6.12: a held request answered 200 right after the server got
a weight; ``timeout client`` does not run while the action sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

__all__ = ["HOLD_ACTION", "WakeListener", "hold_rule", "render_hold_script"]

log = logging.getLogger(__name__)

HOLD_ACTION = "landlord_hold"
ASK_TIMEOUT_S = 2
POLL_MS = 50
RETRY_AFTER_S = 5

_SCRIPT = """\
-- Written by the Landlord agent (agent/dataplane/wake_hold.py); edits are overwritten.
local AGENT_ADDR, AGENT_PORT = "{addr}", {port}
local HOLD_MS, MAX_HELD, POLL_MS = {hold_ms}, {max_held}, {poll_ms}
local held = 0

-- nbsrv counts servers up with a weight, those added at runtime included (the servers
-- table of core.backends is built once, when the script is loaded)
local function usable(txn, be)
  return (txn.f:nbsrv(be) or 0) > 0
end

local function ask(be)
  local sock = core.tcp()
  sock:settimeout({ask_timeout})
  if not sock:connect(AGENT_ADDR, AGENT_PORT) then return false end
  sock:send("wake " .. be .. "\\n")
  local line = sock:receive("*l")
  sock:close()
  return line == "hold"
end

local function unavailable(txn, why)
  txn:done(txn:reply({{status = 503,
    headers = {{["retry-after"] = {{"{retry_after}"}}, ["content-type"] = {{"text/plain"}}}},
    body = why .. "\\n"}}))
end

local function now_ms()
  local t = core.now()
  return t.sec * 1000 + t.usec // 1000
end

core.register_action("{action}", {{"http-req"}}, function(txn)
  local be = txn.f:be_name()
  if usable(txn, be) or not ask(be) then return end
  if held >= MAX_HELD then
    return unavailable(txn, "too many requests are waiting for this unit to wake")
  end
  held = held + 1
  local deadline = now_ms() + HOLD_MS
  while not usable(txn, be) do
    if now_ms() > deadline then
      held = held - 1
      return unavailable(txn, "the unit is waking up; try again shortly")
    end
    core.msleep(POLL_MS)
  end
  held = held - 1
end)
"""


def render_hold_script(addr: str, port: int, hold_s: float, max_held: int) -> str:
    """The Lua file HAProxy loads (``lua-load``)."""
    return _SCRIPT.format(addr=addr, port=int(port), hold_ms=round(hold_s * 1000),
                          max_held=int(max_held), poll_ms=POLL_MS, ask_timeout=ASK_TIMEOUT_S,
                          retry_after=RETRY_AFTER_S, action=HOLD_ACTION)


def hold_rule() -> str:
    """The backend line that runs the action when no server is usable."""
    return f"    http-request lua.{HOLD_ACTION} if !{{ nbsrv gt 0 }}"


class WakeListener:
    """Answers HAProxy's "wake BACKEND" with "hold" when ``decide(backend)`` says the
    backend's unit is collected (``decide`` also asks for the wake), else "no"."""

    def __init__(self, address: str, port: int, decide: Callable[[str], bool]) -> None:
        self.address = address
        self.port = port
        self.decide = decide
        self.asked = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, self.address, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):
                line = (await reader.readline()).decode("ascii", "replace").strip()
            verb, _, backend = line.partition(" ")
            hold = verb == "wake" and bool(backend) and self.decide(backend)
            self.asked += 1
            writer.write(b"hold\n" if hold else b"no\n")
            await writer.drain()
        except (OSError, TimeoutError) as exc:
            log.debug("wake listener: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def write_hold_script(path: Path, addr: str, port: int, hold_s: float, max_held: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_hold_script(addr, port, hold_s, max_held))
