"""Both directions of a bridged instance shaped on the host side of its veth.

A bridged container's traffic crosses one device of the host's namespace, the host end of
its veth, and that device sees both directions:
- the container's egress arrives as the veth's *ingress*, which a qdisc cannot shape; as
  the CNI bandwidth plugin does, it is redirected (``mirred``) to an ifb device owned by
  the instance and shaped there with one HTB class at the rate;
- traffic towards the container leaves as the veth's *egress*: a root HTB on the veth with
  the same one class at the rate shapes it.
Neither needs net_cls or any cgroup, so this works on cgroup v1 and v2 alike. The veth's
name changes with every container start, so this is applied on every start; the ifb is
named after the instance's class minor (its creation is the host-wide claim of that minor),
carries its owner as alias (``landlord/<host>/<instance>``: an agent deletes its own ifbs
left behind by instances it no longer has) and is deleted on release; the veth's qdiscs go
with the veth. The container cannot undo any
of it: it lives in the host's namespace, and the container holds no CAP_NET_ADMIN.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Collection

from agent.limits.htb import shaped_device_commands
from common.errors import FailedPrecondition

__all__ = ["claim_ifb", "host_veth", "ifb_minors", "ifb_name", "ifb_owner", "in_own_netns",
           "owned_ifbs", "probe_ifb", "release_commands", "remove_owned_ifbs", "run_tool",
           "shape_veth", "shaping_commands", "unshape"]

IFB_PREFIX = "llifb"
OWNER_PREFIX = "landlord/"
_PEER = re.compile(r"^\d+:\s+eth0@if(\d+):", re.MULTILINE)
_IFB = re.compile(rf"^\d+:\s+{IFB_PREFIX}([0-9a-f]+)[:@]", re.MULTILINE)


def ifb_name(minor: int) -> str:
    return f"{IFB_PREFIX}{minor:x}"


def ifb_minors(ip_link_text: str) -> set[int]:
    """The minors whose ifb exists, from ``ip -o link show``."""
    return {int(found, 16) for found in _IFB.findall(ip_link_text)}


def ifb_owner(host_id: str, instance_id: str) -> str:
    """The alias of an instance's ifb: which agent's instance holds the minor."""
    return f"{OWNER_PREFIX}{host_id}/{instance_id}"


def owned_ifbs(ip_json: str, owner_prefix: str) -> dict[str, int]:
    """From ``ip -j link show type ifb``: name -> minor of the instance ifbs whose owner
    (alias) starts with ``owner_prefix`` (``landlord/<host>/``, or a test cluster's
    ``landlord/<host prefix>``)."""
    found: dict[str, int] = {}
    for link in json.loads(ip_json or "[]"):
        name, alias = str(link.get("ifname", "")), str(link.get("ifalias", ""))
        minors = ifb_minors(f"1: {name}:")
        if minors and alias.startswith(OWNER_PREFIX) and alias.startswith(owner_prefix):
            found[name] = minors.pop()
    return found


def remove_owned_ifbs(owner_prefix: str, keep: Collection[int] = ()) -> list[str]:
    """Blocking: delete the instance ifbs owned under ``owner_prefix`` but the ``keep``
    minors; their names."""
    owned = owned_ifbs(run_tool(["ip", "-j", "link", "show", "type", "ifb"]), owner_prefix)
    gone = [name for name, minor in owned.items() if minor not in keep]
    for name in gone:
        with contextlib.suppress(FailedPrecondition):  # removed meanwhile
            run_tool(["ip", "link", "del", name])
    return gone


def shaping_commands(veth: str, minor: int, rate_bits: int) -> list[list[str]]:
    """Hold both directions of ``veth``'s container to ``rate_bits``: its egress (the veth's
    ingress, redirected to the instance's ifb) and its ingress (the veth's egress)."""
    ifb = ifb_name(minor)
    return [
        ["ip", "link", "set", ifb, "up"],
        *shaped_device_commands(ifb, minor, rate_bits),
        ["tc", "qdisc", "replace", "dev", veth, "handle", "ffff:", "ingress"],
        ["tc", "filter", "replace", "dev", veth, "parent", "ffff:", "protocol", "all",
         "prio", "1", "u32", "match", "u32", "0", "0", "action", "mirred", "egress",
         "redirect", "dev", ifb],
        *shaped_device_commands(veth, minor, rate_bits),
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


def claim_ifb(minor: int, owner: str) -> bool:
    """Create the ifb of ``minor`` for ``owner``: False when it exists (another instance,
    maybe of another agent on this host, holds the minor); raises when ifb devices cannot
    be made here."""
    try:
        run_tool(["ip", "link", "add", ifb_name(minor), "type", "ifb"])
    except FailedPrecondition as exc:
        if "File exists" in str(exc):
            return False
        raise
    run_tool(["ip", "link", "set", ifb_name(minor), "alias", owner])
    return True


def probe_ifb() -> None:
    """Raise FailedPrecondition unless this host can make ifb devices (root, ifb module)."""
    probe = f"{IFB_PREFIX}p{os.getpid():x}"[:15]
    with contextlib.suppress(FailedPrecondition):
        run_tool(["ip", "link", "del", probe])
    run_tool(["ip", "link", "add", probe, "type", "ifb"])
    run_tool(["ip", "link", "del", probe])


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


def shape_veth(pid: int, minor: int, rate_bits: int) -> str:
    """Blocking: shape both directions of the bridged container ``pid``; returns the veth."""
    veth = host_veth(pid)
    with contextlib.suppress(FailedPrecondition):  # claimed, or left from its last start
        run_tool(["ip", "link", "add", ifb_name(minor), "type", "ifb"])
    for cmd in shaping_commands(veth, minor, rate_bits):
        run_tool(cmd)
    return veth


def unshape(minor: int) -> None:
    for cmd in release_commands(minor):
        with contextlib.suppress(FailedPrecondition):
            run_tool(cmd)
