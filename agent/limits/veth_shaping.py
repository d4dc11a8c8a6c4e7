"""Egress shaping of a bridged instance on the host side of its veth.

A bridged container's egress leaves its namespace through ``eth0`` and enters the host on
the veth's host end, as that device's *ingress*; net_cls classids on loopback never see it.
As the CNI bandwidth plugin does, the veth's ingress is redirected (``mirred``) to an ifb
device owned by the instance and shaped there with one HTB class at the rate. The veth's
name changes with every container start, so this is applied on every start; the ifb is
named after the instance's class minor and deleted on release. The container cannot undo
any of it: it lives in the host's namespace, and the container holds no CAP_NET_ADMIN.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess

from common.errors import FailedPrecondition

__all__ = ["host_veth", "ifb_name", "in_own_netns", "release_commands", "run_tool", "shape_veth",
           "shaping_commands", "unshape"]

_PEER = re.compile(r"^\d+:\s+eth0@if(\d+):", re.MULTILINE)


def ifb_name(minor: int) -> str:
    return f"llifb{minor:x}"


def shaping_commands(veth: str, minor: int, rate_bits: int,
                     class_cmd: list[str], leaf_cmd: list[str]) -> list[list[str]]:
    """Redirect ``veth``'s ingress to the instance's ifb and shape it there;
    ``class_cmd``/``leaf_cmd`` are the HTB class and leaf of the rate on the ifb."""
    ifb = ifb_name(minor)
    return [
        ["ip", "link", "set", ifb, "up"],
        ["tc", "qdisc", "replace", "dev", ifb, "root", "handle", "1:", "htb",
         "default", f"{minor:x}"],
        class_cmd,
        leaf_cmd,
        ["tc", "qdisc", "replace", "dev", veth, "handle", "ffff:", "ingress"],
        ["tc", "filter", "replace", "dev", veth, "parent", "ffff:", "protocol", "all",
         "prio", "1", "u32", "match", "u32", "0", "0", "action", "mirred", "egress",
         "redirect", "dev", ifb],
    ]


def release_commands(minor: int) -> list[list[str]]:
    return [["ip", "link", "del", ifb_name(minor)]]


def in_own_netns(pid: int) -> bool:
    """Whether process ``pid`` has a network namespace other than the agent's."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def run_tool(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise FailedPrecondition(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def host_veth(pid: int) -> str:
    """The host-side name of the veth whose other end is ``eth0`` in ``pid``'s namespace."""
    inside = run_tool(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link", "show", "eth0"])
    found = _PEER.search(inside)
    if found is None:
        raise FailedPrecondition(f"no veth eth0 in the namespace of pid {pid}")
    index = found.group(1)
    for line in run_tool(["ip", "-o", "link", "show"]).splitlines():
        number, _, rest = line.partition(":")
        if number.strip() == index:
            return rest.split("@")[0].strip()
    raise FailedPrecondition(f"no host device with index {index} (veth of pid {pid})")


def shape_veth(pid: int, minor: int, rate_bits: int, class_cmd: list[str],
               leaf_cmd: list[str]) -> str:
    """Blocking: shape the egress of the bridged container ``pid``; returns the veth."""
    veth = host_veth(pid)
    with contextlib.suppress(FailedPrecondition):  # left from this instance's last start
        run_tool(["ip", "link", "add", ifb_name(minor), "type", "ifb"])
    for cmd in shaping_commands(veth, minor, rate_bits, class_cmd, leaf_cmd):
        run_tool(cmd)
    return veth


def unshape(minor: int) -> None:
    for cmd in release_commands(minor):
        with contextlib.suppress(FailedPrecondition):
            run_tool(cmd)
