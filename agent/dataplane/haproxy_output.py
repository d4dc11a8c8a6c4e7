"""Parse what HAProxy's admin and master sockets print (pure).

Shapes checked against HAProxy 2.6.12: ``show stat`` CSV with a ``# pxname,...``
header, ``show servers state`` version 1, ``show map <file>`` (``<ref> <key> <value>``),
``show info`` (``Name: value``) and the master's ``show proc`` table. In prompt mode
every reply is followed by ``"\\n> "``; :func:`split_prompt_replies` cuts them apart.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass

from agent.dataplane.model import ServerState

__all__ = [
    "ObservedServer",
    "ProcTable",
    "ServerStateRow",
    "StatRow",
    "command_failed",
    "observed_servers",
    "parse_servers_state",
    "parse_show_info",
    "parse_show_map",
    "parse_show_proc",
    "parse_show_stat",
    "split_prompt_replies",
]

_ADMF_FMAINT = 0x01
_ADMF_CMAINT = 0x04
_ADMF_FDRAIN = 0x08


@dataclass(frozen=True)
class StatRow:
    """One server row of ``show stat``."""

    backend: str
    server: str
    qcur: int
    scur: int
    status: str
    """UP, DOWN, DRAIN, MAINT, NOLB, "UP 1/2" (going down), "no check" ..."""
    weight: int
    req_tot: int
    addr: str
    check_status: str
    sid: int = 0
    """The server's id in its backend (a server deleted and added again gets a new one)."""
    hrsp_5xx: int = 0
    """5xx responses the server sent."""
    eresp: int = 0
    """Responses that failed (server aborted, timed out or answered garbage)."""
    econ: int = 0
    """Requests whose connection to this server failed after every retry."""


@dataclass(frozen=True)
class ServerStateRow:
    """One row of ``show servers state``."""

    backend: str
    server: str
    addr: str
    port: int
    op_state: int
    """0 down, 1 starting, 2 up, 3 stopping."""
    admin_bits: int
    weight: int
    initial_weight: int

    @property
    def admin_state(self) -> ServerState:
        if self.admin_bits & (_ADMF_FMAINT | _ADMF_CMAINT):
            return ServerState.MAINT
        if self.admin_bits & _ADMF_FDRAIN:
            return ServerState.DRAIN
        return ServerState.READY


@dataclass(frozen=True)
class ObservedServer:
    """A server of a unit's weighted backend as HAProxy reports it."""

    name: str
    addr: str
    version: str
    weight: int
    state: ServerState
    status: str
    """HAProxy's status: UP, DOWN, DRAIN, MAINT, "UP 1/2" (going down), ..."""
    sessions: int
    queued: int
    requests: int


@dataclass(frozen=True)
class ProcTable:
    """The master CLI ``show proc`` answer."""

    master_pid: int
    reloads: int
    failed_reloads: int
    workers: tuple[int, ...]
    old_workers: tuple[int, ...]


def split_prompt_replies(raw: str, commands: int) -> list[str]:
    """Replies to ``commands`` commands sent after ``prompt`` (whose reply is dropped)."""
    parts = raw.split("\n> ")
    replies = [part.strip() for part in parts[1 : commands + 1]]
    if len(replies) < commands:
        replies += [""] * (commands - len(replies))
    return replies


# Replies that mean success for commands that otherwise print nothing.
_OK_REPLIES = ("", "New server registered.", "Server deleted.", "Done.")


def command_failed(command: str, reply: str) -> bool:
    """Whether ``reply`` reports a failure of a state-changing ``command``."""
    if command.startswith(("show ", "get ")):
        return False
    return reply not in _OK_REPLIES


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


_STAT_TEXT = ("pxname", "svname", "status", "addr", "check_status")
_STAT_INTS = ("qcur", "scur", "weight", "req_tot", "sid", "hrsp_5xx", "eresp", "econ")


def parse_show_stat(text: str) -> list[StatRow]:
    """Server rows (type 2) of ``show stat`` output; frontends and backends are skipped.

    Read every second for the request counts, so only the columns a StatRow holds are
    picked out (by position, from the header)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    where = {name: index for index, name in enumerate(lines[0][2:].split(","))}
    wanted = [where.get(name, -1) for name in (*_STAT_TEXT, *_STAT_INTS)]
    kind = where.get("type", -1)
    rows: list[StatRow] = []
    for values in csv.reader(lines[1:]):
        if kind < 0 or kind >= len(values) or values[kind] != "2":
            continue
        picked = [values[i] if 0 <= i < len(values) else "" for i in wanted]
        backend, server, status, addr, check = picked[:5]
        qcur, scur, weight, req_tot, sid, fivexx, eresp, econ = map(_int, picked[5:])
        rows.append(StatRow(backend, server, qcur, scur, status, weight, req_tot, addr, check,
                            sid=sid, hrsp_5xx=fivexx, eresp=eresp, econ=econ))
    return rows


def observed_servers(
    stat_text: str, state_text: str, backend: str, versions: Mapping[str, str]
) -> list[ObservedServer]:
    """Join ``show stat`` and ``show servers state`` of one backend, server by server."""
    states = {r.server: r for r in parse_servers_state(state_text)}
    result = []
    for row in parse_show_stat(stat_text):
        if row.backend != backend:
            continue
        state = states.get(row.server)
        result.append(
            ObservedServer(
                name=row.server,
                addr=row.addr,
                version=versions.get(row.server, ""),
                weight=row.weight,
                state=state.admin_state if state else ServerState.READY,
                status=row.status,
                sessions=row.scur,
                queued=row.qcur,
                requests=row.req_tot,
            )
        )
    return result


def parse_servers_state(text: str) -> list[ServerStateRow]:
    """Rows of ``show servers state`` (format version 1)."""
    lines = text.splitlines()
    header: list[str] = []
    rows: list[ServerStateRow] = []
    for line in lines:
        if line.startswith("# be_id"):
            header = line[2:].split()
            continue
        if not line.strip() or line.startswith("#") or not header:
            continue
        fields = dict(zip(header, line.split(), strict=False))
        if "srv_name" not in fields:
            continue
        rows.append(
            ServerStateRow(
                backend=fields["be_name"],
                server=fields["srv_name"],
                addr=fields.get("srv_addr", ""),
                port=_int(fields.get("srv_port", "0")),
                op_state=_int(fields.get("srv_op_state", "0")),
                admin_bits=_int(fields.get("srv_admin_state", "0")),
                weight=_int(fields.get("srv_uweight", "0")),
                initial_weight=_int(fields.get("srv_iweight", "0")),
            )
        )
    return rows


def parse_show_map(text: str) -> dict[str, str]:
    """``<ref> <key> <value>`` lines into key -> value."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries[parts[1]] = parts[2].strip()
    return entries


def parse_show_info(text: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            info[name.strip()] = value.strip()
    return info


def parse_show_proc(text: str) -> ProcTable:
    """The master CLI ``show proc`` table; raises ValueError when there is no master row."""
    master_pid = reloads = failed = -1
    workers: list[int] = []
    old: list[int] = []
    section = "master"
    for line in text.splitlines():
        if line.startswith("# workers"):
            section = "workers"
            continue
        if line.startswith("# old workers"):
            section = "old"
            continue
        if line.startswith("#"):
            section = "other"
            continue
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        if parts[1] == "master":
            master_pid, reloads = int(parts[0]), _int(parts[2])
            if "[failed:" in line:
                failed = _int(line.split("[failed:", 1)[1].split("]", 1)[0].strip())
        elif section == "workers" and parts[1] == "worker":
            workers.append(int(parts[0]))
        elif section == "old" and parts[1] == "worker":
            old.append(int(parts[0]))
    if master_pid < 0:
        raise ValueError(f"no master in show proc output: {text[:200]!r}")
    return ProcTable(master_pid, reloads, max(failed, 0), tuple(workers), tuple(old))
