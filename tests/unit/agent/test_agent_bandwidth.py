"""Egress shaping: the pure pieces (commands, class ids, burst) and the bpf program."""

from __future__ import annotations

import struct

import pytest

from agent.limits.bandwidth import (
    class_command,
    classid_value,
    free_minor,
    htb_burst_bytes,
    leaf_command,
)
from agent.limits.bpf_classid import CLASSID_PROGRAM
from common.errors import FailedPrecondition


def test_class_command_and_classid() -> None:
    assert class_command("lo", 0x1A, 8_000_000) == [
        "tc",
        "class",
        "replace",
        "dev",
        "lo",
        "parent",
        "1:",
        "classid",
        "1:1a",
        "htb",
        "rate",
        "8000000bit",
        "ceil",
        "8000000bit",
        "burst",
        "262144",
        "cburst",
        "262144",
    ]
    assert classid_value(0x1A) == 0x1001A
    # a bounded queue: burst + 50 ms at the rate
    assert leaf_command("lo", 0x1A, 8_000_000) == [
        "tc", "qdisc", "replace", "dev", "lo", "parent", "1:1a", "handle", "1a:", "bfifo",
        "limit", str(262144 + 50_000)]


def test_burst_exceeds_loopback_mtu_and_scales() -> None:
    assert htb_burst_bytes(1_000_000) == 256 * 1024
    assert htb_burst_bytes(10_000_000_000) == 10_000_000_000 // 8 // 20


def test_free_minor() -> None:
    assert free_minor([]) == 0x10
    assert free_minor([0x10, 0x11, 0x13]) == 0x12
    with pytest.raises(FailedPrecondition):
        free_minor(range(0x10, 0xFFFF))


def test_classifier_returns_the_cgroup_classid() -> None:
    call, exit_ = struct.iter_unpack("<BBhi", CLASSID_PROGRAM)
    assert call == (0x85, 0, 0, 17)  # call bpf_get_cgroup_classid
    assert exit_ == (0x95, 0, 0, 0)
