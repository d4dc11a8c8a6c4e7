"""Bandwidth shaping: the pure pieces (commands, class ids, burst) and the bpf program."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.limits import bandwidth, veth_shaping
from agent.limits.bandwidth import (
    EgressShaper,
    ShapingResult,
    classid_value,
    free_minor,
)
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


class FakeTools:
    """Records every command the shaper runs; answers the veth look-up of a bridged pid."""

    def __init__(self) -> None:
        self.ran: list[list[str]] = []

    def __call__(self, cmd: list[str]) -> str:
        self.ran.append(cmd)
        if cmd[0] == "nsenter":
            return "5: eth0@if9: <BROADCAST,UP> mtu 1500\n"
        if cmd[:3] == ["ip", "-o", "link"]:
            return "1: lo: <LOOPBACK>\n9: veth77@if5: <BROADCAST,UP>\n"
        return ""


@pytest.fixture
def v2_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[EgressShaper, FakeTools]:
    """A shaper on a cgroup v2 host (no net_cls anywhere) whose tools are recorded."""
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    tools = FakeTools()
    monkeypatch.setattr(bandwidth, "_run", tools)
    monkeypatch.setattr(veth_shaping, "run_tool", tools)
    monkeypatch.setattr(bandwidth, "_net_cls_mount", lambda: None)
    return EgressShaper("lo", tmp_path, tmp_path / "run"), tools


def test_a_bridged_instance_on_cgroup_v2_is_shaped_both_ways_without_net_cls(
        v2_host: tuple[EgressShaper, FakeTools], monkeypatch: pytest.MonkeyPatch) -> None:
    shaper, tools = v2_host
    monkeypatch.setattr(bandwidth, "in_own_netns", lambda pid: True)
    result = shaper.apply("c1", 4242, 0x1A, 8_000_000)
    assert result == ShapingResult(True, "8000000 bit/s each way: egress on llifb1a (from veth"
                                         " veth77's ingress), ingress on veth77")
    assert shaper.available().enforced
    words = {word for cmd in tools.ran for word in cmd}
    assert "mount" not in words and "lo" not in words and shaper.net_cls is None
    assert ["tc", "qdisc", "replace", "dev", "veth77", "root", "handle", "1:", "htb",
            "default", "1a"] in tools.ran


def test_a_host_network_instance_on_cgroup_v2_is_reported_not_enforced(
        v2_host: tuple[EgressShaper, FakeTools], monkeypatch: pytest.MonkeyPatch) -> None:
    shaper, tools = v2_host
    monkeypatch.setattr(bandwidth, "in_own_netns", lambda pid: False)
    result = shaper.apply("c1", 4242, 0x1A, 8_000_000)
    assert not result.enforced and "cgroup v2" in result.detail
    assert "use bridge network mode" in result.detail
    assert not any(cmd[0] == "mount" for cmd in tools.ran)  # never a v1 net_cls on v2



def test_a_minor_is_claimed_host_wide_by_creating_its_ifb(
        v2_host: tuple[EgressShaper, FakeTools], monkeypatch: pytest.MonkeyPatch) -> None:
    shaper, tools = v2_host
    shaper.host_id = "h1"
    raced = {"llifb11"}  # another agent created it between the look and the claim

    def run(cmd: list[str]) -> str:
        if cmd[:3] == ["ip", "link", "add"] and cmd[3] in raced:
            raise FailedPrecondition(f"{' '.join(cmd)}: RTNETLINK answers: File exists")
        if cmd[:3] == ["ip", "-o", "link"]:
            return "7: llifb12: <BROADCAST,NOARP,UP> mtu 1500\n"  # taken already
        return tools(cmd)

    monkeypatch.setattr(bandwidth, "_run", run)
    monkeypatch.setattr(veth_shaping, "run_tool", run)
    assert shaper.claim({0x10}, "i-1") == 0x13  # 10: this agent's, 11: raced, 12: taken
    assert ["ip", "link", "set", "llifb13", "alias", "landlord/h1/i-1"] in tools.ran
