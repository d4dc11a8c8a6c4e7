"""Bandwidth shaping: the pure pieces (commands, class ids, burst) and the bpf program."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.limits.bandwidth import classid_value, free_minor
from agent.limits.bpf_classid import CLASSID_PROGRAM
from agent.limits.htb import (
    class_command,
    htb_burst_bytes,
    leaf_command,
    leaf_queue_bytes,
    shaped_device_commands,
)
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


@given(st.integers(0x10, 0xFFFE), st.integers(1, 10**11))
def test_every_device_holds_one_class_at_the_rate(minor: int, rate: int) -> None:
    root, klass, leaf = shaped_device_commands("veth0", minor, rate)
    assert root[-2:] == ["default", f"{minor:x}"]  # all of the device's traffic: the class
    assert klass == class_command("veth0", minor, rate)
    assert klass[klass.index("rate") + 1] == klass[klass.index("ceil") + 1] == f"{rate}bit"
    assert leaf[leaf.index("parent") + 1] == klass[klass.index("classid") + 1] == f"1:{minor:x}"
    burst = htb_burst_bytes(rate)
    assert burst >= 256 * 1024 and burst >= rate // 8 // 20  # above lo's MTU, ~50 ms
    assert int(leaf[-1]) == leaf_queue_bytes(rate) == burst + rate // 8 // 20  # bounded


@given(st.sets(st.integers(0x10, 0x200), max_size=64))
def test_free_minor_is_the_lowest_untaken(taken: set[int]) -> None:
    minor = free_minor(taken)
    assert minor not in taken and minor >= 0x10
    assert all(m in taken for m in range(0x10, minor))
