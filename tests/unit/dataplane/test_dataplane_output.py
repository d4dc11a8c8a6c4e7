from __future__ import annotations

import pytest

from agent.dataplane.haproxy_output import (
    command_failed,
    observed_servers,
    parse_servers_state,
    parse_show_info,
    parse_show_map,
    parse_show_proc,
    parse_show_stat,
    split_prompt_replies,
)
from agent.dataplane.model import ServerState
from tests.unit.dataplane.dataplane_samples import (
    PROMPT_COMMANDS,
    PROMPT_RAW,
    SERVERS_STATE,
    SHOW_MAP,
    SHOW_PROC,
    SHOW_STAT,
)


def test_show_stat_rows_carry_sessions_status_weight_and_address() -> None:
    a, b = parse_show_stat(SHOW_STAT)
    assert (a.backend, a.server, a.scur, a.qcur, a.status, a.weight) == (
        "be.web",
        "a",
        3,
        0,
        "UP",
        100,
    )
    assert (a.req_tot, a.addr, a.check_status) == (37, "127.0.0.3:25001", "L7OK")
    assert (b.server, b.status, b.weight, b.qcur) == ("b", "DRAIN", 0, 2)


def test_show_stat_skips_frontend_and_backend_rows_and_junk() -> None:
    header = SHOW_STAT.splitlines()[0]
    backend_row = "be.web,BACKEND,0,0,3,5,200,40" + ",0" * 24 + ",1"  # type column is not 2
    assert parse_show_stat(header + "\n" + backend_row) == []
    assert parse_show_stat("Unknown command.") == []


def test_servers_state_decodes_admin_bits_and_weights() -> None:
    a, b = parse_servers_state(SERVERS_STATE)
    assert (a.backend, a.server, a.addr, a.port, a.weight, a.initial_weight) == (
        "be.web",
        "a",
        "127.0.0.3",
        25001,
        100,
        100,
    )
    assert a.admin_state is ServerState.READY and a.op_state == 2
    assert b.admin_state is ServerState.DRAIN


@pytest.mark.parametrize(
    ("bits", "state"),
    [
        (0x01, "maint"),
        (0x04, "maint"),
        (0x05, "maint"),
        (0x08, "drain"),
        (0x09, "maint"),
        (0x00, "ready"),
    ],
)
def test_admin_state_precedence(bits: int, state: str) -> None:
    line = SERVERS_STATE.splitlines()[2].split()
    line[6] = str(bits)
    text = "\n".join([*SERVERS_STATE.splitlines()[:2], " ".join(line)])
    (row,) = parse_servers_state(text)
    assert row.admin_state.value == state


def test_show_map_and_show_info() -> None:
    assert parse_show_map(SHOW_MAP) == {"1.0.0": "pin0.web", "1.1.0": "pin1.web"}
    assert parse_show_map("Unknown map identifier. Please use #<id> or <file>.") == {}
    info = parse_show_info("Name: HAProxy\nPid: 4242\nDroppedLogs: 7\n")
    assert info["Pid"] == "4242" and info["DroppedLogs"] == "7"


def test_show_proc_lists_master_workers_and_old_workers() -> None:
    table = parse_show_proc(SHOW_PROC)
    assert (table.master_pid, table.reloads, table.failed_reloads) == (11404, 1, 0)
    assert table.workers == (11432,) and table.old_workers == (11300,)
    failed = SHOW_PROC.replace("1 [failed: 0]", "4 [failed: 2]")
    assert parse_show_proc(failed).failed_reloads == 2
    with pytest.raises(ValueError):
        parse_show_proc("")


def test_prompt_replies_are_cut_per_command() -> None:
    replies = split_prompt_replies(PROMPT_RAW, len(PROMPT_COMMANDS))
    assert replies == [
        "",
        "No such server.",
        "5 (initial 100)",
        "Unknown map identifier. Please use #<id> or <file>.",
    ]
    failed = [c for c, r in zip(PROMPT_COMMANDS, replies, strict=True) if command_failed(c, r)]
    assert failed == ["set server be.web/zz weight 1"]


def test_prompt_replies_missing_at_the_end_are_empty() -> None:
    assert split_prompt_replies("\n> \n> ", 3) == ["", "", ""]


@pytest.mark.parametrize(
    ("command", "reply", "failed"),
    [
        ("add server be.web/x 127.0.0.3:1 weight 0", "New server registered.", False),
        ("del server be.web/x", "Server deleted.", False),
        ("add map /m 1.0.0 pin0.web", "", False),
        ("set server be.web/x state ready", "", False),
        (
            "set server be.web/x weight 300",
            "Absolute weight can only be between 0 and 256 inclusive.",
            True,
        ),
        ("del server be.web/x", "Only servers in maintenance mode can be deleted.", True),
        ("show stat", "anything", False),
    ],
)
def test_command_failure_detection(command: str, reply: str, failed: bool) -> None:
    assert command_failed(command, reply) is failed


def test_observed_servers_join_stat_and_state_with_versions() -> None:
    servers = observed_servers(SHOW_STAT, SERVERS_STATE, "be.web", {"a": "1.0.0"})
    assert [
        (s.name, s.version, s.weight, s.state, s.status, s.sessions, s.queued) for s in servers
    ] == [
        ("a", "1.0.0", 100, ServerState.READY, "UP", 3, 0),
        ("b", "", 0, ServerState.DRAIN, "DRAIN", 0, 2),
    ]
    assert observed_servers(SHOW_STAT, SERVERS_STATE, "pin0.web", {}) == []
