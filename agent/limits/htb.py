"""The HTB pieces every bandwidth limit is made of, as pure ``tc`` command builders: a root
qdisc, one class at the rate per instance and its bounded leaf queue. Host-network egress
(``bandwidth``) and both directions of a bridged instance (``veth_shaping``) use them."""

from __future__ import annotations

__all__ = ["MAJOR", "class_command", "htb_burst_bytes", "leaf_command", "leaf_queue_bytes",
           "root_command", "shaped_device_commands"]

MAJOR = 1


def htb_burst_bytes(rate_bits: int) -> int:
    """A burst above lo's 64 KiB MTU (a smaller one stalls TCP) and ~50 ms of traffic."""
    return max(256 * 1024, rate_bits // 8 // 20)


def root_command(device: str, default_minor: int) -> list[str]:
    """The root HTB qdisc of ``device``; unclassified traffic goes to class
    ``1:<default_minor>`` (0: out unshaped)."""
    return ["tc", "qdisc", "replace", "dev", device, "root", "handle", f"{MAJOR}:", "htb",
            "default", f"{default_minor:x}"]


def class_command(device: str, minor: int, rate_bits: int) -> list[str]:
    burst = htb_burst_bytes(rate_bits)
    return ["tc", "class", "replace", "dev", device, "parent", f"{MAJOR}:",
            "classid", f"{MAJOR}:{minor:x}", "htb", "rate", f"{rate_bits}bit",
            "ceil", f"{rate_bits}bit", "burst", str(burst), "cburst", str(burst)]


def leaf_queue_bytes(rate_bits: int) -> int:
    """Queue of one class: its burst plus 50 ms at the rate (as the CNI bandwidth plugin
    bounds latency), so a saturated instance still answers its health checks in time."""
    return htb_burst_bytes(rate_bits) + rate_bits // 8 // 20


def leaf_command(device: str, minor: int, rate_bits: int) -> list[str]:
    return ["tc", "qdisc", "replace", "dev", device, "parent", f"{MAJOR}:{minor:x}",
            "handle", f"{minor:x}:", "bfifo", "limit", str(leaf_queue_bytes(rate_bits))]


def shaped_device_commands(device: str, minor: int, rate_bits: int) -> list[list[str]]:
    """``device``'s whole egress held to ``rate_bits``: a root HTB whose default is the one
    class of the instance, and that class's bounded queue."""
    return [root_command(device, minor), class_command(device, minor, rate_bits),
            leaf_command(device, minor, rate_bits)]
